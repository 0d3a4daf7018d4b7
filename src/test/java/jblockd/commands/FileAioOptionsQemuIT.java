package jblockd.commands;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.QemuStorageDaemon;
import jblockd.testsupport.QmpTestClient;

/**
 * file's aio, aio-max-batch and drop-cache side by side with qemu-storage-daemon 7.2: the same
 * blockdev-add calls (and the same --blockdev on the command line, as Proxmox sends it) give the
 * same replies and the same query-named-block-nodes entries.
 */
class FileAioOptionsQemuIT {
    @TempDir
    Path tmp;

    private static final List<Map<String, Object>> CASES = List.of(Map.of("aio", "native"),
            Map.of("aio", "native", "cache", Map.of("direct", true)), Map.of("aio", "io_uring"),
            Map.of("aio", "threads"), Map.of("aio", "bogus"), Map.of("aio-max-batch", -1),
            Map.of("aio-max-batch", 0), Map.of("aio-max-batch", 128), Map.of("drop-cache", false),
            Map.of("drop-cache", true), Map.of("aio", "threads", "aio-max-batch", 4, "drop-cache", true),
            Map.of("aio", "native", "cache", Map.of("direct", false)));

    private List<JsonNode> run(Path d, QmpTestClient c) throws Exception {
        List<JsonNode> out = new ArrayList<>();
        for (int i = 0; i < CASES.size(); i++) {
            Map<String, Object> a = new HashMap<>(CASES.get(i));
            a.put("driver", "file");
            a.put("node-name", "n" + i);
            a.put("filename", d.resolve("r.img").toString());
            a.put("read-only", true);
            out.add(c.execute("blockdev-add", a));
        }
        for (JsonNode n : c.executeOk("query-named-block-nodes")) {
            ((com.fasterxml.jackson.databind.node.ObjectNode) n).remove(List.of("file"));
            ((com.fasterxml.jackson.databind.node.ObjectNode) n.get("image")).remove(List.of("filename", "actual-size"));
            out.add(n);
        }
        return out;
    }

    @Test
    void aioOptionsLikeQemu() throws Exception {
        ExternalTools.assumeTools("qemu-storage-daemon", "qemu-img");
        Path qd = Files.createDirectories(tmp.resolve("q"));
        Path jd = Files.createDirectories(tmp.resolve("j"));
        for (Path d : new Path[] {qd, jd}) {
            ExternalTools.ok("qemu-img", "create", "-f", "raw", d.resolve("r.img").toString(), "1M");
            ExternalTools.ok("qemu-img", "create", "-f", "qcow2", d.resolve("d.qcow2").toString(), "1M");
        }
        try (QemuStorageDaemon q = QemuStorageDaemon.start(qd, blockdev(qd));
             DaemonProcess j = DaemonProcess.start(jd, blockdev(jd))) {
            QmpTestClient qc = q.connect();
            QmpTestClient jc = j.connect();
            List<JsonNode> qr = run(qd, qc);
            List<JsonNode> jr = run(jd, jc);
            assertThat(jr).hasSameSizeAs(qr);
            for (int i = 0; i < qr.size(); i++) {
                assertThat(jr.get(i)).as("step %d", i).isEqualTo(qr.get(i));
            }
            qc.close();
            jc.close();
        }
    }

    /** Proxmox's spelling: a JSON --blockdev, file with aio under a qcow2. */
    private static String[] blockdev(Path d) {
        return new String[] {"--blockdev", "{\"driver\":\"qcow2\",\"node-name\":\"drive-scsi0\",\"file\":{\"driver\":"
                + "\"file\",\"filename\":\"" + d.resolve("d.qcow2") + "\",\"aio\":\"io_uring\",\"node-name\":\"f-scsi0\","
                + "\"cache\":{\"direct\":false,\"no-flush\":false}},\"cache\":{\"direct\":false,\"no-flush\":false}}"};
    }
}
