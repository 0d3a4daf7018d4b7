package jblockd.block.rbd;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.CephCluster;
import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.NbdPeer;
import jblockd.testsupport.QmpTestClient;

/**
 * jblockd's rbd driver side by side with QEMU 7.2's (qemu-storage-daemon) on one cluster: the
 * same QMP sequences (blockdev-add with a conf file and with monitors + key-secret, the open
 * refusals, query shapes, drive-backup to a local qcow2, blockdev-mirror from a local file into
 * RBD, an NBD export read by nbdcopy, block_resize), replies compared and every copy compared
 * with its source by qemu-img through QEMU's own rbd driver.
 */
class RbdQemuIT {
    static CephCluster ceph;

    @TempDir
    Path dir;

    @BeforeAll
    static void cluster() throws Exception {
        ExternalTools.assumeTools("qemu-img", "qemu-io", "qemu-storage-daemon", "nbdcopy");
        ceph = CephCluster.start();
    }

    @AfterAll
    static void stop() throws Exception {
        if (ceph != null) {
            ceph.close();
        }
    }


    private static String reply(QmpTestClient q, String cmd, Object args) throws Exception {
        JsonNode r = q.execute(cmd, args);
        return cmd + " -> " + (r.has("error") ? r.get("error").toString() : r.get("return").toString());
    }

    /** The members of a query-named-block-nodes entry both daemons fill (no stats counters). */
    private static String shape(QmpTestClient q, String node) throws Exception {
        for (JsonNode n : q.executeOk("query-named-block-nodes")) {
            if (n.path("node-name").asText().equals(node)) {
                JsonNode img = n.path("image");
                return String.join(" | ", n.path("drv").asText(), n.path("file").asText(), n.path("ro").asText(),
                        img.path("filename").asText(), img.path("format").asText(),
                        img.path("virtual-size").asText(), img.path("cluster-size").asText(),
                        img.path("format-specific").toString(), img.path("dirty-flag").asText(),
                        String.valueOf(img.has("actual-size")));
            }
        }
        return "no node " + node;
    }

    @Test
    void openingAndQueriesAsQemu() throws Exception {
        ceph.createImage("q-shape", 64L << 20);
        NbdPeer.Both<List<String>> seen = NbdPeer.qemuThenJblockd(dir, p -> {
            List<String> out = new ArrayList<>();
            out.add(reply(p.qmp(), "blockdev-add", ceph.blockdevAdd("r0", "q-shape")));
            out.add(shape(p.qmp(), "r0"));
            out.add(reply(p.qmp(), "blockdev-add", ceph.blockdevAdd("r1", "nosuch")));
            Map<String, Object> noPool = ceph.blockdevAdd("r2", "q-shape");
            noPool.put("pool", "nopool");
            out.add(reply(p.qmp(), "blockdev-add", noPool));
            Map<String, Object> badConf = ceph.blockdevAdd("r3", "q-shape");
            badConf.put("conf", "/nonexistent/ceph.conf");
            out.add(reply(p.qmp(), "blockdev-add", badConf));
            // monitors and the key as a secret object instead of a conf file
            out.add(reply(p.qmp(), "object-add", Map.of("qom-type", "secret", "id", "k0", "data", ceph.adminKey(),
                    "format", "base64")));
            Map<String, Object> byKey = new LinkedHashMap<>(Map.of("driver", "rbd", "node-name", "r4", "pool", "rbd",
                    "image", "q-shape", "user", "admin", "key-secret", "k0", "auth-client-required", List.of("cephx")));
            String[] hp = ceph.monitor().split(":");
            byKey.put("server", List.of(Map.of("host", hp[0], "port", hp[1])));
            out.add(reply(p.qmp(), "blockdev-add", byKey));
            out.add(shape(p.qmp(), "r4"));
            out.add(reply(p.qmp(), "blockdev-del", Map.of("node-name", "r4")));
            out.add(reply(p.qmp(), "block_resize", Map.of("node-name", "r0", "size", 96L << 20)));
            out.add(shape(p.qmp(), "r0"));
            out.add(reply(p.qmp(), "blockdev-del", Map.of("node-name", "r0")));
            ExternalTools.ok("timeout", "60", "rbd", "--conf", ceph.conf().toString(), "resize", "--allow-shrink",
                    "--size", "64M", "rbd/q-shape");
            return out;
        });
        assertThat(seen.jblockd()).containsExactlyElementsOf(seen.qemu());
        assertThat(seen.jblockd().get(2)).contains("error reading header from nosuch: No such file or directory");
    }

    @Test
    void backupMirrorAndExportCopyWhatQemuCopies() throws Exception {
        ceph.createImage("q-src", 32L << 20);
        ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 0xab 0 1M", "-c", "write -P 0xcd 9M 64k",
                "-c", "write -P 0x11 20M 3M", ceph.rbdName("q-src"));
        int[] round = {0};
        NbdPeer.Both<List<String>> seen = NbdPeer.qemuThenJblockd(dir, p -> {
            String tag = "r" + round[0]++;
            List<String> out = new ArrayList<>();
            QmpTestClient q = p.qmp();
            q.executeOk("blockdev-add", ceph.blockdevAdd("src", "q-src"));
            // backup from RBD into a local qcow2
            Path backup = p.dir().resolve("backup.qcow2");
            q.executeOk("drive-backup", Map.of("job-id", "bk", "device", "src", "target", backup.toString(),
                    "format", "qcow2", "sync", "full"));
            out.add(awaitEnd(q, "bk"));
            out.add(ExternalTools.ok("qemu-img", "compare", "-U", "-f", "raw", "-F", "qcow2", ceph.rbdName("q-src"),
                    backup.toString()).strip());
            // export the RBD node over NBD and read it whole
            q.executeOk("block-export-add", Map.of("type", "nbd", "id", "e", "node-name", "src", "name", "src"));
            Path copy = p.dir().resolve("copy.raw");
            ExternalTools.ok("nbdcopy", "nbd+unix:///src?socket=" + p.dir().resolve("nbd.sock"), copy.toString());
            out.add(ExternalTools.ok("qemu-img", "compare", "-f", "raw", "-F", "raw", ceph.rbdName("q-src"),
                    copy.toString()).strip());
            q.executeOk("block-export-del", Map.of("id", "e"));
            // mirror a local file into a new RBD image, pivot, and compare
            String dst = "q-dst-" + tag;
            ceph.createImage(dst, 32L << 20);
            Path local = p.dir().resolve("local.raw");
            ExternalTools.ok("qemu-img", "create", "-f", "raw", local.toString(), "32M");
            ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 0x42 2M 5M", local.toString());
            q.executeOk("blockdev-add", Map.of("driver", "raw", "node-name", "local",
                    "file", Map.of("driver", "file", "filename", local.toString())));
            q.executeOk("blockdev-add", ceph.blockdevAdd("dst", dst));
            q.executeOk("blockdev-mirror", Map.of("job-id", "m", "device", "local", "target", "dst", "sync", "full"));
            awaitReady(q, "m");
            q.executeOk("block-job-complete", Map.of("device", "m"));
            out.add(awaitEnd(q, "m"));
            out.add(ExternalTools.ok("qemu-img", "compare", "-U", "-f", "raw", "-F", "raw", local.toString(),
                    ceph.rbdName(dst)).strip());
            return out;
        });
        assertThat(seen.jblockd()).containsExactlyElementsOf(seen.qemu());
        assertThat(seen.jblockd()).contains("Images are identical.");
    }

    /**
     * RBD in the other roles, on both daemons: a mirror from RBD to a local image, and RBD as
     * the backing file of a local qcow2 (an rbd: name in its header) that block-stream fills
     * and that block-commit then writes back into RBD.
     */
    @Test
    void rbdAsMirrorSourceAndAsABackingFile() throws Exception {
        int[] round = {0};
        NbdPeer.Both<List<String>> seen = NbdPeer.qemuThenJblockd(dir, p -> {
            String base = "q-base-" + round[0]++;
            ceph.createImage(base, 16L << 20);
            ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 0x61 0 2M", "-c", "write -P 0x62 9M 1M",
                    ceph.rbdName(base));
            List<String> out = new ArrayList<>();
            QmpTestClient q = p.qmp();
            // RBD -> local mirror, pivoted
            q.executeOk("blockdev-add", ceph.blockdevAdd("src", base));
            Path local = p.dir().resolve("mirror.raw");
            q.executeOk("drive-mirror", Map.of("job-id", "m", "device", "src", "target", local.toString(),
                    "format", "raw", "sync", "full"));
            awaitReady(q, "m");
            q.executeOk("block-job-cancel", Map.of("device", "m"));
            out.add(awaitEnd(q, "m"));
            out.add(ExternalTools.ok("qemu-img", "compare", "-U", "-f", "raw", "-F", "raw", ceph.rbdName(base),
                    local.toString()).strip());
            q.executeOk("blockdev-del", Map.of("node-name", "src"));
            // a local overlay over RBD: the guest writes on top, stream pulls the base in
            Path top = p.dir().resolve("top.qcow2");
            ExternalTools.ok("qemu-img", "create", "-f", "qcow2", "-b", ceph.rbdName(base), "-F", "raw",
                    top.toString());
            ExternalTools.ok("qemu-io", "-f", "qcow2", "-c", "write -P 0x63 1M 1M", top.toString());
            q.executeOk("blockdev-add", Map.of("driver", "qcow2", "node-name", "top",
                    "file", Map.of("driver", "file", "filename", top.toString())));
            q.executeOk("block-stream", Map.of("job-id", "s", "device", "top"));
            out.add(awaitEnd(q, "s"));
            q.executeOk("blockdev-del", Map.of("node-name", "top"));
            out.add(ExternalTools.ok("qemu-img", "info", "-U", top.toString()).contains("backing file") ? "backed"
                    : "standalone");
            ExternalTools.ok("qemu-io", "-f", "qcow2", "-r", "-c", "read -P 0x61 0 1M", "-c", "read -P 0x63 1M 1M",
                    "-c", "read -P 0x62 9M 1M", top.toString());
            // and a commit into RBD: a new overlay over the base node, committed down (over a base
            // opened from the overlay's rbd: name, QEMU 7.2's commit cannot reopen it writable:
            // 'A block device must be specified for "file"')
            Path top2 = p.dir().resolve("top2.qcow2");
            ExternalTools.ok("qemu-img", "create", "-f", "qcow2", "-b", ceph.rbdName(base), "-F", "raw",
                    top2.toString());
            ExternalTools.ok("qemu-io", "-f", "qcow2", "-c", "write -P 0x64 12M 1M", top2.toString());
            q.executeOk("blockdev-add", ceph.blockdevAdd("b2", base));
            q.executeOk("blockdev-add", Map.of("driver", "qcow2", "node-name", "top2", "backing", "b2",
                    "file", Map.of("driver", "file", "filename", top2.toString())));
            q.executeOk("block-commit", Map.of("job-id", "c", "device", "top2"));
            awaitReady(q, "c");
            q.executeOk("block-job-complete", Map.of("device", "c"));
            out.add(awaitEnd(q, "c"));
            q.executeOk("blockdev-del", Map.of("node-name", "top2"));
            ExternalTools.ok("qemu-io", "-f", "raw", "-r", "-c", "read -P 0x64 12M 1M", "-c", "read -P 0x61 0 1M",
                    ceph.rbdName(base));
            return out;
        });
        assertThat(seen.jblockd()).containsExactlyElementsOf(seen.qemu());
        assertThat(seen.jblockd()).contains("Images are identical.", "standalone");
    }

    static String awaitEnd(QmpTestClient q, String job) throws Exception {
        while (true) {
            JsonNode ev = q.events().poll(120, java.util.concurrent.TimeUnit.SECONDS);
            if (ev == null) {
                throw new AssertionError("no end of job " + job);
            }
            String name = ev.path("event").asText();
            if ((name.equals("BLOCK_JOB_COMPLETED") || name.equals("BLOCK_JOB_CANCELLED"))
                    && ev.path("data").path("device").asText().equals(job)) {
                return name + " error=" + ev.path("data").path("error").asText("none");
            }
        }
    }

    static void awaitReady(QmpTestClient q, String job) throws Exception {
        while (true) {
            JsonNode ev = q.events().poll(120, java.util.concurrent.TimeUnit.SECONDS);
            if (ev == null) {
                throw new AssertionError("job " + job + " never READY");
            }
            if (ev.path("event").asText().equals("BLOCK_JOB_READY")) {
                return;
            }
        }
    }
}
