package jblockd.it;

import static jblockd.it.Peers.checkQcow2;
import static jblockd.it.Peers.run;
import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import com.fasterxml.jackson.databind.JsonNode;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/**
 * SIGTERM while jobs run (SPEC §1: running jobs are cancelled, images flushed and closed).
 * As QEMU's qemu_cleanup() does (job_cancel_sync_all() before monitor_cleanup()), the
 * connected QMP clients still see SHUTDOWN and then each job's BLOCK_JOB_CANCELLED — a READY
 * mirror is force-cancelled too, so it also ends CANCELLED, not COMPLETED.
 */
class SigtermIT {
    private static final Duration T = Duration.ofSeconds(30);

    @TempDir
    Path dir;

    @BeforeEach
    void tools() {
        Peers.assumeTools("qemu-img", "qemu-io");
    }

    private DaemonProcess daemon(Path src, Path pidfile, Path nbd) throws Exception {
        return DaemonProcess.start(dir, "--pidfile", pidfile.toString(),
                "--drive", "id=drive0,file=" + src + ",format=qcow2",
                "--nbd-server", "addr.type=unix,addr.path=" + nbd,
                "--export", "type=nbd,id=exp0,device=drive0,name=disk,writable=on");
    }

    private static void assertCleanExit(DaemonProcess d, QmpTestClient c, Path pidfile, Path nbd,
            String device) throws Exception {
        d.terminate();
        assertThat(d.waitFor(T)).as("exit code; stderr: %s", d.stderr()).isZero();
        // events were delivered before the QMP connection went away
        JsonNode shutdown = c.waitEvent("SHUTDOWN", T);
        assertThat(shutdown.at("/data/reason").asText()).isEqualTo("host-signal");
        JsonNode cancelled = c.waitEvent("BLOCK_JOB_CANCELLED", T);
        assertThat(cancelled.at("/data/device").asText()).isEqualTo(device);
        assertThat(c.events().stream().map(e -> e.get("event").asText())).doesNotContain("BLOCK_JOB_COMPLETED");
        assertThat(Files.exists(pidfile)).as("pidfile removed").isFalse();
        assertThat(Files.exists(d.qmpSocket())).as("QMP socket removed").isFalse();
        assertThat(Files.exists(nbd)).as("NBD socket removed").isFalse();
    }

    @Test
    void sigtermDuringBackupCancelsItAndClosesImagesCleanly() throws Exception {
        Path src = dir.resolve("src.qcow2");
        Path tgt = dir.resolve("tgt.qcow2");
        Path pid = dir.resolve("jblockd.pid");
        Path nbd = dir.resolve("nbd.sock");
        run("qemu-img", "create", "-q", "-f", "qcow2", src.toString(), "8M");
        run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 8M", src.toString());
        try (DaemonProcess d = daemon(src, pid, nbd); QmpTestClient c = d.connect()) {
            assertThat(Files.readString(pid).strip()).isEqualTo(Long.toString(d.pid()));
            c.executeOk("drive-backup", Map.of("device", "drive0", "target", tgt.toString(), "sync", "full",
                    "format", "qcow2", "speed", 1 << 20));
            // a guest write after the backup started (copy-before-write path)
            run("qemu-io", "-f", "raw", "-c", "write -P 0x22 4M 64k",
                    "nbd+unix:///disk?socket=" + nbd);
            assertCleanExit(d, c, pid, nbd, "drive0");
        }
        for (Path p : List.of(src, tgt)) {
            checkQcow2(p, false);
        }
        run("qemu-io", "-f", "qcow2", "-c", "read -P 0x22 4M 64k", "-c", "read -P 0x11 0 4M", src.toString());
    }

    @Test
    void sigtermDuringReadyMirrorCancelsItAndLeavesBothImagesClean() throws Exception {
        Path src = dir.resolve("src.qcow2");
        Path tgt = dir.resolve("tgt.qcow2");
        Path pid = dir.resolve("jblockd.pid");
        Path nbd = dir.resolve("nbd.sock");
        run("qemu-img", "create", "-q", "-f", "qcow2", src.toString(), "4M");
        run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 4M", src.toString());
        try (DaemonProcess d = daemon(src, pid, nbd); QmpTestClient c = d.connect()) {
            c.executeOk("drive-mirror", Map.of("device", "drive0", "target", tgt.toString(), "sync", "full",
                    "format", "qcow2"));
            c.waitEvent("BLOCK_JOB_READY", T);
            // in sync: a guest write goes to the source and, a moment later, to the target (the
            // mirror copies dirty data in the background). SIGTERM force-cancels the mirror like
            // QEMU's job_cancel_sync_all(), so wait until the write has been copied
            // (offset == len) before asserting that both images are equal.
            run("qemu-io", "-f", "raw", "-c", "write -P 0x33 1M 64k", "nbd+unix:///disk?socket=" + nbd);
            long deadline = System.nanoTime() + T.toNanos();
            while (true) {
                var job = c.executeOk("query-block-jobs").get(0);
                if (job.get("offset").asLong() == job.get("len").asLong() && job.get("len").asLong() > (4 << 20)) {
                    break;
                }
                assertThat(System.nanoTime()).as("mirror copied the guest write in time").isLessThan(deadline);
                Thread.sleep(20);
            }
            assertCleanExit(d, c, pid, nbd, "drive0");
        }
        for (Path p : List.of(src, tgt)) {
            checkQcow2(p, false);
        }
        // No compare of source and target: a force-cancelled mirror in background copy mode
        // may not have copied the last guest writes yet (as in QEMU); the source has them.
        run("qemu-io", "-f", "qcow2", "-c", "read -P 0x33 1M 64k", "-c", "read -P 0x11 0 1M", src.toString());
    }

    /** SIGTERM while nothing can make progress on its own must still end promptly and cleanly. */
    @org.junit.jupiter.params.ParameterizedTest(name = "{0}")
    @org.junit.jupiter.params.provider.ValueSource(strings = {"guest-held-by-werror-stop", "job-stopped-by-error",
        "job-paused", "job-pending"})
    void sigtermWhenStuckStillExitsCleanly(String how) throws Exception {
        Path src = dir.resolve("src.qcow2");
        Path tgt = dir.resolve("tgt.qcow2");
        Path pid = dir.resolve("jblockd.pid");
        Path nbd = dir.resolve("nbd.sock");
        Path conf = dir.resolve("blkdebug.conf");
        run("qemu-img", "create", "-q", "-f", "qcow2", src.toString(), "4M");
        run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 4M", src.toString());
        String event = how.equals("guest-held-by-werror-stop") ? "write_aio" : "read_aio";
        // reads: only sector 4096 (2 MiB into the file, guest data), not the metadata read at open
        Files.writeString(conf, "[inject-error]\nevent = \"" + event + "\"\nerrno = \"5\"\n"
                + (event.equals("read_aio") ? "sector = \"4096\"\n" : ""));
        boolean inject = how.equals("guest-held-by-werror-stop") || how.equals("job-stopped-by-error");
        String file = inject ? "blkdebug:" + conf + ":" + src : src.toString();
        try (DaemonProcess d = DaemonProcess.start(dir, "--pidfile", pid.toString(),
                "--drive", "id=drive0,file=" + file + ",format=qcow2,werror=stop",
                "--nbd-server", "addr.type=unix,addr.path=" + nbd,
                "--export", "type=nbd,id=exp0,device=drive0,name=disk,writable=on");
             QmpTestClient c = d.connect()) {
            RawNbdClient guest = null;
            try {
                switch (how) {
                    case "guest-held-by-werror-stop" -> {
                        guest = new RawNbdClient(nbd, "disk");
                        guest.send(RawNbdClient.CMD_WRITE, 0, 1, 2L << 20, 65536, new byte[65536]);
                        c.waitEvent("STOP", T);
                    }
                    case "job-stopped-by-error" -> {
                        c.executeOk("drive-backup", Map.of("device", "drive0", "target", tgt.toString(),
                                "sync", "full", "format", "qcow2", "on-source-error", "stop"));
                        c.waitEvent("BLOCK_JOB_ERROR", T);
                    }
                    case "job-paused" -> {
                        c.executeOk("drive-backup", Map.of("device", "drive0", "target", tgt.toString(),
                                "sync", "full", "format", "qcow2", "speed", 1 << 20));
                        c.executeOk("block-job-pause", Map.of("device", "drive0"));
                        c.waitEvent("JOB_STATUS_CHANGE", e -> e.at("/data/status").asText().equals("paused"), T);
                    }
                    case "job-pending" -> {
                        c.executeOk("drive-backup", Map.of("device", "drive0", "target", tgt.toString(),
                                "sync", "full", "format", "qcow2", "auto-finalize", false));
                        c.waitEvent("BLOCK_JOB_PENDING", T);
                    }
                    default -> throw new IllegalArgumentException(how);
                }
                long t0 = System.nanoTime();
                d.terminate();
                assertThat(d.waitFor(T)).as("exit code; stderr: %s", d.stderr()).isZero();
                assertThat((System.nanoTime() - t0) / 1_000_000).as("ms to shut down").isLessThan(15_000);
                assertThat(Files.exists(pid)).isFalse();
                if (!how.equals("guest-held-by-werror-stop")) {
                    JsonNode end = c.waitEvent("BLOCK_JOB_CANCELLED", T);
                    assertThat(end.at("/data/device").asText()).isEqualTo("drive0");
                }
            } finally {
                if (guest != null) {
                    guest.close();
                }
            }
        }
        checkQcow2(src, false);
        run("qemu-io", "-r", "-f", "qcow2", "-c", "read -P 0x11 0 4M", src.toString());
        if (Files.exists(tgt)) {
            checkQcow2(tgt, false);
        }
    }

    /** A QMP client that stopped reading (its replies pile up) must not hold up shutdown. */
    @Test
    void sigtermWithAClientThatNeverReadsStillExits() throws Exception {
        Path pid = dir.resolve("jblockd.pid");
        try (DaemonProcess d = DaemonProcess.start(dir, "--pidfile", pid.toString());
             java.nio.channels.SocketChannel stuck = java.nio.channels.SocketChannel.open(
                     java.net.StandardProtocolFamily.UNIX)) {
            stuck.connect(java.net.UnixDomainSocketAddress.of(d.qmpSocket()));
            byte[] cmds = ("{\"execute\":\"qmp_capabilities\"}"
                    + "{\"execute\":\"query-commands\"}".repeat(3000)).getBytes(java.nio.charset.StandardCharsets.UTF_8);
            stuck.configureBlocking(false);
            java.nio.ByteBuffer b = java.nio.ByteBuffer.wrap(cmds);
            long until = System.nanoTime() + 5_000_000_000L;
            while (b.hasRemaining() && System.nanoTime() < until) {
                if (stuck.write(b) == 0) {
                    Thread.sleep(10);
                }
            }
            Thread.sleep(500); // let the daemon's replies fill the socket buffers
            long t0 = System.nanoTime();
            d.terminate();
            assertThat(d.waitFor(T)).as("exit code; stderr: %s", d.stderr()).isZero();
            assertThat((System.nanoTime() - t0) / 1_000_000).as("ms to shut down").isLessThan(15_000);
            assertThat(Files.exists(pid)).isFalse();
        }
    }
}
