package jblockd.it;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

import com.fasterxml.jackson.databind.JsonNode;

import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.Host;
import jblockd.testsupport.NbdPeer;

/**
 * What the across-hosts tests share: a peer of either kind on a host, images, seeded guest
 * writes through an export, and the waits on a job. Stateless.
 */
final class AcrossHosts {
    static final Duration WAIT = Duration.ofSeconds(60);
    static final long SIZE = 32L << 20;

    private AcrossHosts() {
    }

    static Map<String, Object> m(Object... kv) {
        Map<String, Object> out = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) {
            out.put((String) kv[i], kv[i + 1]);
        }
        return out;
    }

    /** jblockd or qemu-storage-daemon ("qsd") on {@code host}, its NBD server on the host's address. */
    static NbdPeer peer(String kind, Host host, Path dir, String... args) throws Exception {
        return switch (kind) {
            case "jblockd" -> NbdPeer.jblockd(host, dir, args);
            case "qsd" -> NbdPeer.qsd(host, dir, args);
            default -> throw new IllegalArgumentException(kind);
        };
    }

    /** A raw image of {@link #SIZE}, with {@code writes} (qemu-io commands) done to it. */
    static Path raw(Path dir, String name, String... writes) throws Exception {
        Path f = dir.resolve(name);
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "raw", f.toString(), Long.toString(SIZE));
        if (writes.length > 0) {
            List<String> argv = new ArrayList<>(List.of("qemu-io", "-f", "raw"));
            for (String w : writes) {
                argv.add("-c");
                argv.add(w);
            }
            argv.add(f.toString());
            ExternalTools.ok(argv.toArray(String[]::new));
        }
        return f;
    }

    /** A raw node {@code node} over {@code image} on the peer. */
    static void rawNode(NbdPeer p, String node, Path image) throws IOException {
        p.qmp().executeOk("blockdev-add", m("driver", "raw", "node-name", node, "file",
                m("driver", "file", "filename", image.toString())));
    }

    /** A writable export {@code name} of {@code node} on the peer's NBD server. */
    static void export(NbdPeer p, String node, String name) throws IOException {
        p.qmp().executeOk("block-export-add", m("type", "nbd", "id", name, "node-name", node, "name", name,
                "writable", true));
    }

    /**
     * {@code count} guest writes of 4 KiB .. 256 KiB at random 4 KiB-aligned offsets with random
     * patterns, drawn from {@code rnd}, as one qemu-io run on {@code host} through {@code uri}.
     */
    static void guestWrites(Host host, String uri, Random rnd, int count) throws Exception {
        List<String> argv = new ArrayList<>(List.of("qemu-io", "-f", "raw"));
        for (int i = 0; i < count; i++) {
            long len = (1L + rnd.nextInt(64)) << 12;
            long off = ((long) rnd.nextInt((int) ((SIZE - len) >> 12))) << 12;
            argv.add("-c");
            argv.add("write -P 0x" + Integer.toHexString(1 + rnd.nextInt(255)) + " " + off + " " + len);
        }
        argv.add(uri);
        host.ok(argv.toArray(String[]::new));
    }

    /** qemu-img compare of two raw images; "Images are identical." when they are. */
    static String compare(Path a, Path b) throws Exception {
        ExternalTools.Result r = ExternalTools.run("qemu-img", "compare", "-U", "-f", "raw", "-F", "raw",
                a.toString(), b.toString());
        return r.out().strip();
    }

    /** The next event {@code name} of job {@code id}. */
    static JsonNode event(NbdPeer p, String name, String id) throws IOException {
        return p.qmp().waitEvent(name, x -> x.path("data").path("device").asText().equals(id), WAIT);
    }

    /** The job's query-block-jobs entry, or null once it is gone. */
    static JsonNode job(NbdPeer p, String id) throws IOException {
        for (JsonNode j : p.qmp().executeOk("query-block-jobs")) {
            if (j.get("device").asText().equals(id)) {
                return j;
            }
        }
        return null;
    }

    /** Waits (polled) until the job has copied {@code offset} bytes. */
    static void awaitOffset(NbdPeer p, String id, long offset) throws Exception {
        long deadline = System.nanoTime() + WAIT.toNanos();
        while (System.nanoTime() < deadline) {
            JsonNode j = job(p, id);
            if (j != null && j.get("offset").asLong() >= offset) {
                return;
            }
            Thread.sleep(20); // polling the job's progress
        }
        throw new AssertionError("job " + id + " on " + p.name() + " did not reach " + offset);
    }

    /** Waits (polled) until the job is paused by its error policy and idle. */
    static JsonNode awaitPaused(NbdPeer p, String id) throws Exception {
        long deadline = System.nanoTime() + WAIT.toNanos();
        while (System.nanoTime() < deadline) {
            JsonNode j = job(p, id);
            if (j != null && j.get("paused").asBoolean() && !j.get("busy").asBoolean()) {
                return j;
            }
            Thread.sleep(20); // polling the job's state: no event but the status change
        }
        throw new AssertionError("job " + id + " on " + p.name() + " did not pause");
    }

    /** sha256 of a file, to show it did not change. */
    static String sha256(Path f) throws Exception {
        return ExternalTools.ok("sha256sum", f.toString()).split("\\s+")[0];
    }

    static void assertIdentical(Path a, Path b, String why) throws Exception {
        assertThat(compare(a, b)).as(why).isEqualTo("Images are identical.");
    }
}
