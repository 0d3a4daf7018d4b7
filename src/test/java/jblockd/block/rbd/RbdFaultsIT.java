package jblockd.block.rbd;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

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
 * Faults on the cluster, the same steps on qemu-storage-daemon 7.2 and jblockd: the OSD
 * restarted in the middle of a backup from RBD and of a mirror into RBD (librbd holds the
 * requests until the OSD is back: both jobs complete, no error), a second writer taking the
 * exclusive lock, a wrong key.
 */
class RbdFaultsIT {
    static CephCluster ceph;

    @TempDir
    Path dir;

    @BeforeAll
    static void cluster() throws Exception {
        ExternalTools.assumeTools("qemu-img", "qemu-io", "qemu-storage-daemon");
        ceph = CephCluster.start();
    }

    @AfterAll
    static void stop() throws Exception {
        if (ceph != null) {
            ceph.close();
        }
    }


    /** Waits until the job has copied something (it is mid-job), by polling query-block-jobs. */
    private static void awaitProgress(QmpTestClient q, String job) throws Exception {
        for (int i = 0; i < 6000; i++) {
            for (JsonNode j : q.executeOk("query-block-jobs")) {
                if (j.path("device").asText().equals(job) && j.path("offset").asLong() > 0) {
                    return;
                }
            }
            TimeUnit.MILLISECONDS.sleep(10); // polling a daemon's state, not synchronising threads
        }
        throw new AssertionError("job " + job + " made no progress");
    }

    private static JsonNode awaitEvent(QmpTestClient q, String name) throws Exception {
        while (true) {
            JsonNode ev = q.events().poll(120, TimeUnit.SECONDS);
            if (ev == null) {
                throw new AssertionError("no " + name);
            }
            if (ev.path("event").asText().equals(name)) {
                return ev;
            }
        }
    }

    @Test
    void aBackupWaitsThroughAnOsdRestartAndCompletes() throws Exception {
        String img = "f-restart";
        ceph.createImage(img, 32L << 20);
        ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 0x6c 0 24M", ceph.rbdName(img));
        NbdPeer.Both<List<String>> seen = NbdPeer.qemuThenJblockd(dir, p -> {
            QmpTestClient q = p.qmp();
            q.executeOk("blockdev-add", ceph.blockdevAdd("r0", img));
            Path target = p.dir().resolve("b.qcow2");
            q.executeOk("drive-backup", Map.of("job-id", "bk", "device", "r0", "target", target.toString(),
                    "format", "qcow2", "sync", "full", "speed", 4L << 20));
            awaitProgress(q, "bk");
            ceph.restartOsd(1);
            q.executeOk("block-job-set-speed", Map.of("device", "bk", "speed", 0));
            List<String> out = new ArrayList<>();
            out.add(RbdQemuIT.awaitEnd(q, "bk"));
            out.add(ExternalTools.ok("qemu-img", "compare", "-U", "-f", "raw", "-F", "qcow2", ceph.rbdName(img),
                    target.toString()).strip());
            return out;
        });
        assertThat(seen.jblockd()).containsExactlyElementsOf(seen.qemu())
                .containsExactly("BLOCK_JOB_COMPLETED error=none", "Images are identical.");
    }

    /** A mirror into RBD with the OSD restarted mid-copy: its writes wait, it reaches READY and completes. */
    @Test
    void aMirrorIntoRbdWaitsThroughAnOsdRestart() throws Exception {
        NbdPeer.Both<List<String>> seen = NbdPeer.qemuThenJblockd(dir, p -> {
            String img = "f-mirror-" + p.name();
            ceph.createImage(img, 32L << 20);
            QmpTestClient q = p.qmp();
            Path local = p.dir().resolve("local.raw");
            ExternalTools.ok("qemu-img", "create", "-f", "raw", local.toString(), "32M");
            ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 0x42 0 30M", local.toString());
            q.executeOk("blockdev-add", Map.of("driver", "raw", "node-name", "src",
                    "file", Map.of("driver", "file", "filename", local.toString())));
            q.executeOk("blockdev-add", ceph.blockdevAdd("dst", img));
            q.executeOk("blockdev-mirror", Map.of("job-id", "m", "device", "src", "target", "dst", "sync", "full",
                    "on-target-error", "stop", "speed", 4L << 20));
            awaitProgress(q, "m");
            ceph.restartOsd(2);
            q.executeOk("block-job-set-speed", Map.of("device", "m", "speed", 0));
            RbdQemuIT.awaitReady(q, "m");
            q.executeOk("block-job-complete", Map.of("device", "m"));
            List<String> out = new ArrayList<>();
            out.add(RbdQemuIT.awaitEnd(q, "m"));
            out.add(ExternalTools.ok("qemu-img", "compare", "-U", "-f", "raw", "-F", "raw", local.toString(),
                    ceph.rbdName(img)).strip());
            return out;
        });
        assertThat(seen.jblockd()).containsExactlyElementsOf(seen.qemu())
                .containsExactly("BLOCK_JOB_COMPLETED error=none", "Images are identical.");
    }

    /** A second client writing the image takes librbd's exclusive lock; the node's next write takes it back. */
    @Test
    void aSecondWriterTakesTheExclusiveLockAndGivesItBack() throws Exception {
        NbdPeer.Both<List<String>> seen = NbdPeer.qemuThenJblockd(dir, p -> {
            String img = "f-lock-" + p.name();
            ceph.createImage(img, 16L << 20);
            QmpTestClient q = p.qmp();
            q.executeOk("blockdev-add", ceph.blockdevAdd("r0", img));
            q.executeOk("block-export-add", Map.of("type", "nbd", "id", "g", "node-name", "r0", "name", "g",
                    "writable", true));
            String nbd = "nbd+unix:///g?socket=" + p.dir().resolve("nbd.sock");
            List<String> out = new ArrayList<>();
            for (int i = 0; i < 3; i++) {
                String a = Integer.toHexString(0x10 + i);
                String b = Integer.toHexString(0x20 + i);
                out.add(firstLine(ExternalTools.run("qemu-io", "-f", "raw", "-c", "write -P 0x" + a + " 0 1M", nbd)));
                // another client of the cluster, the way a second VM or `rbd import` would write
                out.add(firstLine(ExternalTools.run("qemu-io", "-f", "raw", "-c", "write -P 0x" + b + " 1M 1M",
                        ceph.rbdName(img))));
            }
            out.add(firstLine(ExternalTools.run("qemu-io", "-f", "raw", "-c", "read -P 0x12 0 1M", "-c",
                    "read -P 0x22 1M 1M", nbd)));
            return out;
        });
        assertThat(seen.jblockd()).containsExactlyElementsOf(seen.qemu());
        assertThat(seen.jblockd()).allMatch(l -> l.startsWith("0:wrote") || l.startsWith("0:read"));
    }

    private static String firstLine(ExternalTools.Result r) {
        return r.exit() + ":" + r.out().lines().findFirst().orElse("");
    }

    @Test
    void aWrongKeyIsRefusedInQemusWords() throws Exception {
        String img = "f-key";
        Path mountTimeout = ceph.confWith("mount.conf", "client mount timeout = 3");
        ceph.createImage(img, 16L << 20);
        NbdPeer.Both<List<String>> seen = NbdPeer.qemuThenJblockd(dir, p -> {
            QmpTestClient q = p.qmp();
            List<String> out = new ArrayList<>();
            // a refused key makes librados retry until client_mount_timeout (300 s by default)
            // a well-formed key of another client, and a secret that is no key at all
            String other = "AQBpVRBrAAAAABAAWJ6pcN9ug3mQ2U2y6q6Jqw==";
            q.executeOk("object-add", Map.of("qom-type", "secret", "id", "wrong", "data", other, "format", "base64"));
            q.executeOk("object-add", Map.of("qom-type", "secret", "id", "junk", "data", "not a key"));
            for (String secret : List.of("wrong", "junk")) {
                Map<String, Object> o = CephCluster.blockdevAdd("k-" + secret, img, mountTimeout);
                o.put("key-secret", secret);
                JsonNode r = q.execute("blockdev-add", o);
                out.add(r.has("error") ? r.get("error").toString() : "added");
            }
            return out;
        });
        assertThat(seen.jblockd()).containsExactlyElementsOf(seen.qemu());
        assertThat(seen.jblockd()).allMatch(l -> l.contains("GenericError"));
    }
}
