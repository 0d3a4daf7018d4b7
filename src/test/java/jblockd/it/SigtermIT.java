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
        run("qemu-img", "compare", src.toString(), tgt.toString());
        run("qemu-io", "-f", "qcow2", "-c", "read -P 0x33 1M 64k", src.toString());
    }
}
