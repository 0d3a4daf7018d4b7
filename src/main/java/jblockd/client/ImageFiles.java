package jblockd.client;

import java.nio.file.Path;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;

/**
 * Image files made by the daemon, on its host, through {@code blockdev-create} (so it works the
 * same against jblockd and qemu-storage-daemon): each step is a {@code create} job that
 * concludes and is then dismissed; a failed step's error (query-jobs) is thrown.
 */
public final class ImageFiles {
    private static final Duration T = Duration.ofSeconds(60);

    private ImageFiles() {
    }

    /**
     * A new qcow2 of {@code size} bytes at {@code file} (truncated if it exists), its header
     * naming {@code backingFile} (format qcow2) when not null. Job and node ids start with
     * {@code tag}.
     */
    public static void createQcow2(QmpClient qmp, Path file, long size, String backingFile, String tag)
            throws InterruptedException {
        createJob(qmp, tag + "-file", Map.of("driver", "file", "filename", file.toString(), "size", 0));
        String node = tag + "-file";
        qmp.execute("blockdev-add", Map.of("driver", "file", "node-name", node, "filename", file.toString()));
        try {
            Map<String, Object> o = new LinkedHashMap<>(Map.of("driver", "qcow2", "file", node, "size", size));
            if (backingFile != null) {
                o.put("backing-file", backingFile);
                o.put("backing-fmt", "qcow2");
            }
            createJob(qmp, tag + "-qcow2", o);
        } finally {
            qmp.execute("blockdev-del", Map.of("node-name", node));
        }
    }

    private static void createJob(QmpClient qmp, String id, Map<String, Object> options) throws InterruptedException {
        try (EventStream ev = qmp.events()) {
            qmp.execute("blockdev-create", Map.of("job-id", id, "options", options));
            ev.await(e -> e.name().equals(QmpEvent.JOB_STATUS_CHANGE) && e.data().path("id").asText().equals(id)
                    && e.data().path("status").asText().equals("concluded"), T);
        }
        String error = null;
        for (JsonNode j : qmp.execute("query-jobs", null)) {
            if (j.path("id").asText().equals(id) && j.has("error")) {
                error = j.get("error").asText();
            }
        }
        qmp.execute("job-dismiss", Map.of("id", id));
        if (error != null) {
            throw new IllegalStateException("creating " + options.get("driver") + " image: " + error);
        }
    }
}
