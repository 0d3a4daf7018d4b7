package jblockd.block.qcow2;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.NbdPeer;
import jblockd.testsupport.QmpTestClient;

/**
 * qcow2's runtime options side by side with qemu-storage-daemon 7.2: the cache-size rules and
 * texts (read_cache_sizes), cache-clean-interval's bound, options both accept; then what jblockd
 * refuses where QEMU would act (lazy refcounts, overlap checks, partial L2 cache entries), and
 * pass-discard-request honoured: off keeps a discarded cluster's space in the file.
 */
class Qcow2RuntimeOptionsQemuIT {
    @TempDir
    Path dir;

    @BeforeEach
    void tools() {
        ExternalTools.assumeTools("qemu-img", "qemu-storage-daemon");
    }

    private Map<String, Object> qcow2(Path img, Map<String, Object> extra) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("driver", "qcow2");
        m.put("node-name", "n");
        m.put("file", Map.of("driver", "file", "filename", img.toString()));
        m.putAll(extra);
        return m;
    }

    private static String addThenDel(QmpTestClient q, Map<String, Object> args) throws Exception {
        JsonNode r = q.execute("blockdev-add", args);
        if (r.has("error")) {
            return r.get("error").get("desc").asText();
        }
        q.executeOk("blockdev-del", Map.of("node-name", "n"));
        return "ok";
    }

    @Test
    void cacheSizeRulesAndTextsAsQemu() throws Exception {
        List<Map<String, Object>> cases = List.of(
                Map.of("cache-size", 1 << 20, "l2-cache-size", 1 << 19, "refcount-cache-size", 1 << 19),
                Map.of("cache-size", 1 << 20, "l2-cache-size", 2 << 20),
                Map.of("cache-size", 1 << 20, "refcount-cache-size", 2 << 20),
                Map.of("cache-size", 1 << 20, "refcount-cache-size", 1 << 18),
                Map.of("cache-size", 1 << 20, "l2-cache-size", 1 << 18),
                Map.of("cache-size", 1),
                Map.of("cache-size", 0),
                Map.of("cache-size", 64 << 20),
                Map.of("l2-cache-size", 1),
                Map.of("l2-cache-size", Long.MAX_VALUE),
                Map.of("refcount-cache-size", Long.MAX_VALUE),
                Map.of("l2-cache-entry-size", 1000),
                Map.of("l2-cache-entry-size", 131072),
                Map.of("l2-cache-entry-size", 65536),
                Map.of("cache-clean-interval", -1),
                Map.of("cache-clean-interval", 0),
                Map.of("cache-clean-interval", 30),
                Map.of("lazy-refcounts", false),
                Map.of("overlap-check", "bogus"),
                Map.of("overlap-check", "none"),
                Map.of("overlap-check", Map.of("template", "none", "l1", true)),
                Map.of("pass-discard-request", false, "pass-discard-other", true, "pass-discard-snapshot", true));
        NbdPeer.Both<List<String>> seen = NbdPeer.qemuThenJblockd(dir, p -> {
            Path img = p.dir().resolve("a.qcow2");
            ExternalTools.ok("qemu-img", "create", "-f", "qcow2", img.toString(), "1G");
            List<String> out = new ArrayList<>();
            for (Map<String, Object> c : cases) {
                out.add(c + " -> " + addThenDel(p.qmp(), qcow2(img, c)));
            }
            return out;
        });
        assertThat(seen.jblockd()).containsExactlyElementsOf(seen.qemu());
        assertThat(seen.jblockd()).anyMatch(l -> l.endsWith("-> Refcount cache size too big"))
                .anyMatch(l -> l.endsWith("-> l2-cache-size may not exceed cache-size"));
    }

    @Test
    void whatJblockdDoesNotDoIsRefused() throws Exception {
        NbdPeer.Both<List<String>> seen = NbdPeer.qemuThenJblockd(dir, p -> {
            Path img = p.dir().resolve("b.qcow2");
            ExternalTools.ok("qemu-img", "create", "-f", "qcow2", img.toString(), "1G");
            List<String> out = new ArrayList<>();
            for (Map<String, Object> c : List.<Map<String, Object>>of(Map.of("lazy-refcounts", true),
                    Map.of("overlap-check", "cached"), Map.of("overlap-check", Map.of("template", "none",
                            "active-l1", true)), Map.of("l2-cache-entry-size", 4096))) {
                out.add(addThenDel(p.qmp(), qcow2(img, c)));
            }
            return out;
        });
        assertThat(seen.qemu()).containsOnly("ok");
        assertThat(seen.jblockd()).containsExactly(
                "jblockd's qcow2 updates refcounts at once: lazy-refcounts=on is not supported",
                "jblockd's qcow2 does not check its writes against the image's metadata: overlap-check can only be 'none'",
                "jblockd's qcow2 does not check its writes against the image's metadata: overlap-check can only be 'none'",
                "jblockd caches whole L2 tables: l2-cache-entry-size must be the cluster size (65536)");
    }

    /** pass-discard-request: on (default with discard=unmap) punches the freed cluster out of the file, off keeps it. */
    @Test
    void passDiscardRequestDecidesWhetherTheFileShrinks() throws Exception {
        NbdPeer.Both<List<Long>> seen = NbdPeer.qemuThenJblockd(dir, p -> {
            List<Long> out = new ArrayList<>();
            for (boolean pass : new boolean[] {true, false}) {
                Path img = p.dir().resolve("d" + pass + ".qcow2");
                ExternalTools.ok("qemu-img", "create", "-f", "qcow2", img.toString(), "64M");
                ExternalTools.ok("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 8M", img.toString());
                Map<String, Object> add = qcow2(img, Map.of("pass-discard-request", pass));
                add.put("discard", "unmap");
                add.put("file", Map.of("driver", "file", "filename", img.toString(), "discard", "unmap"));
                p.qmp().executeOk("blockdev-add", add);
                p.qmp().executeOk("block-export-add", Map.of("type", "nbd", "id", "e", "node-name", "n", "name", "e",
                        "writable", true));
                ExternalTools.ok("qemu-io", "-f", "raw", "-c", "discard 0 8M",
                        "nbd+unix:///e?socket=" + p.dir().resolve("nbd.sock"));
                p.qmp().executeOk("block-export-del", Map.of("id", "e"));
                p.qmp().executeOk("blockdev-del", Map.of("node-name", "n"));
                long blocks = Long.parseLong(ExternalTools.ok("stat", "-c", "%b", img.toString()).strip());
                out.add(blocks * 512 < (4L << 20) ? 0L : 1L); // 0: the data's space went, 1: it stayed
            }
            return out;
        });
        assertThat(seen.jblockd()).containsExactlyElementsOf(seen.qemu()).containsExactly(0L, 1L);
    }
}
