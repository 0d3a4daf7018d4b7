package jblockd.it;

import static jblockd.it.AcrossHosts.SIZE;
import static jblockd.it.AcrossHosts.assertIdentical;
import static jblockd.it.AcrossHosts.event;
import static jblockd.it.AcrossHosts.export;
import static jblockd.it.AcrossHosts.guestWrites;
import static jblockd.it.AcrossHosts.m;
import static jblockd.it.AcrossHosts.peer;
import static jblockd.it.AcrossHosts.raw;
import static jblockd.it.AcrossHosts.rawNode;
import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.HostPair;
import jblockd.testsupport.NbdPeer;
import jblockd.testsupport.QemuNbd;

/**
 * The nbd driver between two hosts (issue 15, Verify): host A and host B are the two network
 * namespaces of a {@link HostPair}, the data crosses their veth link over TCP, QMP stays on
 * UNIX sockets. jblockd and QEMU 7.2 (qemu-storage-daemon, qemu-nbd) take either end.
 */
class AcrossHostsIT {
    @TempDir
    Path dir;

    @BeforeEach
    void tools() {
        ExternalTools.assumeTools("qemu-img", "qemu-io", "qemu-nbd", "qemu-storage-daemon");
    }

    /**
     * remote.md §5 across the link, under seeded random guest writes on A (through A's export of
     * the source, before and after READY): (a) cancel at READY leaves A on its disk and B with
     * A's final content; (b) complete pivots A's device (and the guest's export) onto B.
     */
    @ParameterizedTest(name = "{0} on A -> {1} on B, {2}")
    @CsvSource({"jblockd,jblockd,cancel", "jblockd,jblockd,complete", "jblockd,qsd,cancel", "jblockd,qsd,complete",
            "qsd,jblockd,cancel", "qsd,jblockd,complete"})
    void mirrorUnderGuestWritesReachesTheOtherHost(String source, String target, String end) throws Exception {
        long seed = Long.getLong("jblockd.seed", System.nanoTime());
        System.out.println("mirror " + source + " -> " + target + " (" + end + "): seed " + seed
                + " (-Djblockd.seed=" + seed + " replays it)");
        Random rnd = new Random(seed);
        Path src = raw(Files.createDirectories(dir.resolve("a-img")), "src.raw", "write -P 0x5a 0 8M",
                "write -P 0x5b 20M 4M");
        Path dst = raw(Files.createDirectories(dir.resolve("b-img")), "dst.raw");
        try (HostPair hosts = HostPair.create();
             NbdPeer a = peer(source, hosts.a(), dir.resolve("a"));
             NbdPeer b = peer(target, hosts.b(), dir.resolve("b"))) {
            rawNode(b, "disk0", dst);
            export(b, "disk0", "drive0");
            rawNode(a, "src", src);
            export(a, "src", "guest");
            a.qmp().executeOk("blockdev-add", m("driver", "nbd", "node-name", "mig-target", "server", b.nbdServer(),
                    "export", "drive0"));
            // rate-limited so that the first guest writes land while the bulk copy runs
            a.qmp().executeOk("blockdev-mirror", m("device", "src", "target", "mig-target", "sync", "full",
                    "speed", 16 << 20, "job-id", "m"));
            guestWrites(hosts.a(), a.nbd("guest"), rnd, 60);
            JsonNode ready = event(a, "BLOCK_JOB_READY", "m");
            assertThat(ready.get("data").get("len").asLong()).isEqualTo(ready.get("data").get("offset").asLong());
            a.qmp().executeOk("block-job-set-speed", m("device", "m", "speed", 0));
            guestWrites(hosts.a(), a.nbd("guest"), rnd, 30); // in sync: copied as they come
            if (end.equals("cancel")) {
                a.qmp().executeOk("block-job-cancel", m("device", "m"));
                JsonNode done = event(a, "BLOCK_JOB_COMPLETED", "m");
                assertThat(done.get("data").has("error")).as(done.toString()).isFalse();
                assertIdentical(src, dst, "B's image vs A's final content (seed " + seed + ")");
                // A stays on its own disk: a later guest write reaches src only
                a.host().ok("qemu-io", "-f", "raw", "-c", "write -P 0xc1 1M 64k", a.nbd("guest"));
                ExternalTools.ok("qemu-io", "-r", "-f", "raw", "-c", "read -P 0xc1 1M 64k", src.toString());
                assertThat(ExternalTools.run("qemu-io", "-r", "-f", "raw", "-c", "read -P 0xc1 1M 64k",
                        dst.toString()).out()).contains("Pattern verification failed");
            } else {
                a.qmp().executeOk("block-job-complete", m("device", "m"));
                JsonNode done = event(a, "BLOCK_JOB_COMPLETED", "m");
                assertThat(done.get("data").has("error")).as(done.toString()).isFalse();
                assertIdentical(src, dst, "B's image vs A's content at the pivot (seed " + seed + ")");
                // the guest's export now writes across the link
                a.host().ok("qemu-io", "-f", "raw", "-c", "write -P 0xc2 2M 64k", a.nbd("guest"));
                b.host().ok("qemu-io", "-r", "-f", "raw", "-c", "read -P 0xc2 2M 64k", b.nbd("drive0"));
                assertThat(ExternalTools.run("qemu-io", "-r", "-f", "raw", "-c", "read -P 0xc2 2M 64k",
                        src.toString()).out()).contains("Pattern verification failed");
            }
        }
    }

    /** blockdev-backup and drive-backup (mode=existing, nbd:// target) to qemu-nbd on B. */
    @Test
    void backupToATargetOnTheOtherHost() throws Exception {
        Path src = raw(Files.createDirectories(dir.resolve("a-img")), "src.raw", "write -P 0x21 0 4M",
                "write -P 0x22 28M 1M");
        Path dst = raw(Files.createDirectories(dir.resolve("b-img")), "dst.raw");
        Path dst2 = raw(dir.resolve("b-img"), "dst2.raw");
        try (HostPair hosts = HostPair.create();
             NbdPeer a = peer("jblockd", hosts.a(), dir.resolve("a"));
             QemuNbd b = QemuNbd.startTcp(hosts.b(), dir.resolve("b-img"), HostPair.NBD_PORT, dst, "raw", "e");
             QemuNbd b2 = QemuNbd.startTcp(hosts.b(), dir.resolve("b-img"), HostPair.NBD_PORT + 1, dst2, "raw", "e")) {
            rawNode(a, "src", src);
            a.qmp().executeOk("blockdev-add", m("driver", "nbd", "node-name", "tgt", "server", m("type", "inet",
                    "host", hosts.b().address(), "port", Integer.toString(HostPair.NBD_PORT)), "export", "e"));
            a.qmp().executeOk("blockdev-backup", m("device", "src", "target", "tgt", "sync", "full", "job-id", "b"));
            JsonNode done = event(a, "BLOCK_JOB_COMPLETED", "b");
            assertThat(done.get("data").has("error")).as(done.toString()).isFalse();
            assertIdentical(src, dst, "blockdev-backup target on B");
            a.qmp().executeOk("drive-backup", m("device", "src", "target", "nbd://" + hosts.b().address() + ":"
                    + (HostPair.NBD_PORT + 1) + "/e", "mode", "existing", "format", "raw", "sync", "full",
                    "job-id", "b2"));
            done = event(a, "BLOCK_JOB_COMPLETED", "b2");
            assertThat(done.get("data").has("error")).as(done.toString()).isFalse();
            assertIdentical(src, dst2, "drive-backup target on B");
        }
    }

    /**
     * "Start the guest here while its disk is still there": a qcow2 on A whose backing file is
     * B's export (named in its header as nbd://B/e), written by the guest on A, then streamed in.
     */
    @Test
    void aBackingFileOnTheOtherHostIsStreamedIn() throws Exception {
        Path base = raw(Files.createDirectories(dir.resolve("b-img")), "base.raw", "write -P 0x31 0 2M",
                "write -P 0x32 30M 1M", "write -P 0x33 8M 1M");
        try (HostPair hosts = HostPair.create();
             NbdPeer b = peer("jblockd", hosts.b(), dir.resolve("b"));
             NbdPeer a = peer("jblockd", hosts.a(), dir.resolve("a"))) {
            rawNode(b, "base", base);
            b.qmp().executeOk("block-export-add", m("type", "nbd", "id", "e", "node-name", "base", "name", "e"));
            Path ov = Files.createDirectories(dir.resolve("a-img")).resolve("ov.qcow2");
            // made on A: qemu-img reads the backing's size across the link
            hosts.a().ok("qemu-img", "create", "-q", "-f", "qcow2", "-b", b.nbd("e"), "-F", "raw", ov.toString());
            a.qmp().executeOk("blockdev-add", m("driver", "qcow2", "node-name", "ov", "file",
                    m("driver", "file", "filename", ov.toString())));
            export(a, "ov", "guest");
            hosts.a().ok("qemu-io", "-f", "raw", "-c", "write -P 0x77 8M 512k", a.nbd("guest"));
            a.qmp().executeOk("block-stream", m("device", "ov", "job-id", "s"));
            JsonNode done = event(a, "BLOCK_JOB_COMPLETED", "s");
            assertThat(done.get("data").has("error")).as(done.toString()).isFalse();
            a.qmp().executeOk("block-export-del", m("id", "guest"));
            a.qmp().waitEvent("BLOCK_EXPORT_DELETED", AcrossHosts.WAIT);
            a.qmp().executeOk("blockdev-del", m("node-name", "ov"));
        }
        // B is gone: the overlay stands alone
        assertThat(ExternalTools.ok("qemu-img", "info", "-U", ov(dir))).doesNotContain("backing file");
        ExternalTools.ok("qemu-img", "check", ov(dir));
        String io = ExternalTools.ok("qemu-io", "-r", "-f", "qcow2", "-c", "read -P 0x31 0 2M",
                "-c", "read -P 0x77 8M 512k", "-c", "read -P 0x33 8704k 512k", "-c", "read -P 0x32 30M 1M",
                "-c", "read -P 0 2M 6M", ov(dir));
        assertThat(io).doesNotContain("Pattern verification failed");
    }

    private static String ov(Path dir) {
        return dir.resolve("a-img").resolve("ov.qcow2").toString();
    }

    /**
     * A remote source read by a local backup: qemu-nbd on B serves the disk, A backs it up into
     * an image it creates (drive-backup), which stays sparse: base:allocation across the link
     * lets the job skip the holes (SPEC §7).
     */
    @Test
    void aSourceOnTheOtherHostIsBackedUpHere() throws Exception {
        Path disk = raw(Files.createDirectories(dir.resolve("b-img")), "disk.raw", "write -P 0x41 1M 3M",
                "write -P 0x42 25M 64k");
        Path local = Files.createDirectories(dir.resolve("a-img")).resolve("backup.raw");
        try (HostPair hosts = HostPair.create();
             QemuNbd b = QemuNbd.startTcp(hosts.b(), dir.resolve("b-img"), HostPair.NBD_PORT, disk, "raw", "e", "-r");
             NbdPeer a = peer("jblockd", hosts.a(), dir.resolve("a"))) {
            a.qmp().executeOk("blockdev-add", m("driver", "nbd", "node-name", "remote", "read-only", true,
                    "server", m("type", "inet", "host", hosts.b().address(), "port",
                            Integer.toString(HostPair.NBD_PORT)), "export", "e"));
            a.qmp().executeOk("drive-backup", m("device", "remote", "target", local.toString(), "format", "raw",
                    "sync", "full", "job-id", "b"));
            JsonNode done = event(a, "BLOCK_JOB_COMPLETED", "b");
            assertThat(done.get("data").has("error")).as(done.toString()).isFalse();
            assertThat(done.get("data").get("offset").asLong()).isEqualTo(SIZE);
            assertIdentical(disk, local, "local backup of B's disk");
            assertThat(Files.size(local)).isEqualTo(SIZE);
            long kib = Long.parseLong(ExternalTools.ok("du", "-k", local.toString()).split("\\s+")[0]);
            assertThat(kib).as("KiB allocated in the backup of 3 MiB + 64 KiB of data").isLessThan(8 * 1024);
        }
    }
}
