package jblockd.it;

import static jblockd.it.Peers.checkQcow2;
import static jblockd.it.Peers.content;
import static jblockd.it.Peers.killNine;
import static jblockd.it.Peers.run;
import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import com.fasterxml.jackson.databind.JsonNode;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/**
 * kill -9 of the daemon in the middle of a job while a guest writes over NBD (SPEC §6: the
 * source is always intact, a target is complete or recognisably incomplete).
 * <p>
 * What "recognisably incomplete" means for jblockd: a target is complete exactly when its job
 * emitted BLOCK_JOB_COMPLETED without {@code error} (as in QEMU, nothing is written into the
 * target to say so). A target left by a crash never saw that event; its qcow2 metadata is
 * consistent all the same ({@code qemu-img check}: no corruption, leaked clusters allowed), so
 * it can be inspected or deleted safely and a new job can overwrite it.
 * <p>
 * The source after the crash: qcow2 metadata consistent (leaks allowed), and each 64 KiB block
 * holds the last write the guest was told was durable (FUA, or a flush that succeeded after it),
 * or a later write that was not yet durable.
 */
class KillNineIT {
    private static final Duration T = Duration.ofSeconds(30);
    private static final int MIB = 1 << 20;

    @TempDir
    Path dir;
    Path nbd;

    @BeforeEach
    void tools() {
        Peers.assumeTools("qemu-img", "qemu-io");
        nbd = dir.resolve("nbd.sock");
    }

    private DaemonProcess daemon(Path img, String format) throws Exception {
        return DaemonProcess.start(dir,
                "--drive", "id=drive0,file=" + img + ",format=" + format + ",node-name=root0",
                "--nbd-server", "addr.type=unix,addr.path=" + nbd,
                "--export", "type=nbd,id=exp0,device=drive0,name=disk,writable=on");
    }

    /** Lets the guest write until at least {@code n} more writes were acknowledged. */
    private static void guestWrites(GuestWriter g, long n) throws Exception {
        long goal = g.acked() + n;
        long deadline = System.nanoTime() + T.toNanos();
        while (g.acked() < goal) {
            assertThat(g.ended()).as("guest writer failed").isNull();
            assertThat(System.nanoTime()).as("guest made no progress").isLessThan(deadline);
            Thread.sleep(5);
        }
    }

    private static void assertJobRunning(QmpTestClient c) throws Exception {
        JsonNode jobs = c.executeOk("query-block-jobs");
        assertThat(jobs).as("job still running when killed").hasSize(1);
        assertThat(jobs.get(0).get("offset").asLong()).isLessThan(jobs.get(0).get("len").asLong());
    }

    /**
     * kill -9 while the backup runs; then: it never completed, the source's metadata is
     * consistent and each block holds what the guest was told (GuestWriter#verify).
     */
    private void killBackupAndCheckSource(DaemonProcess d, QmpTestClient c, GuestWriter g, Path src, String fmt,
                                          byte[] initial) throws Exception {
        assertJobRunning(c);
        killNine(d);
        g.stop();
        assertThat(c.events().stream().map(e -> e.get("event").asText())).doesNotContain("BLOCK_JOB_COMPLETED");
        if (fmt.equals("qcow2")) {
            checkQcow2(src, true);
        }
        g.verify(content(src, fmt, dir), initial);
    }

    @ParameterizedTest(name = "{0} source, {1} target")
    @CsvSource({"qcow2, qcow2", "qcow2, raw", "raw, qcow2"})
    void killDuringBackup(String srcFmt, String tgtFmt) throws Exception {
        Path src = dir.resolve("src." + srcFmt);
        Path tgt = dir.resolve("tgt." + tgtFmt);
        run("qemu-img", "create", "-q", "-f", srcFmt, src.toString(), "8M");
        run("qemu-io", "-f", srcFmt, "-c", "write -P 0x11 0 6M", src.toString());
        byte[] initial = content(src, srcFmt, dir);
        DaemonProcess d = daemon(src, srcFmt);
        try (QmpTestClient c = d.connect(); GuestWriter g = new GuestWriter(nbd, "disk", 1)) {
            c.executeOk("drive-backup", Map.of("device", "drive0", "target", tgt.toString(), "sync", "full",
                    "format", tgtFmt, "speed", MIB));
            guestWrites(g, 60);
            killBackupAndCheckSource(d, c, g, src, srcFmt, initial);
        } finally {
            d.close();
        }
        // the incomplete target: consistent metadata, still readable
        if (tgtFmt.equals("qcow2")) {
            checkQcow2(tgt, true);
        }
        assertThat(content(tgt, tgtFmt, dir)).hasSize(8 * MIB);
        // a restarted daemon opens the crashed source read/write and a new backup overwrites
        // the incomplete target with a complete copy
        try (DaemonProcess again = daemon(src, srcFmt); QmpTestClient c = again.connect()) {
            c.executeOk("drive-backup", Map.of("device", "drive0", "target", tgt.toString(), "sync", "full",
                    "format", tgtFmt));
            assertThat(c.waitEvent("BLOCK_JOB_COMPLETED", T).get("data").has("error")).isFalse();
            run("qemu-img", "compare", "-U", "-f", srcFmt, "-F", tgtFmt, src.toString(), tgt.toString());
        }
        if (tgtFmt.equals("qcow2")) {
            checkQcow2(tgt, false);
        }
    }

    /**
     * kill -9 with the backup's save buffer full (issue 17): the job is paused, so nothing drains;
     * the first guest writes to uncopied clusters fill the 4-cluster buffer, later ones copy
     * synchronously. The source still holds every acknowledged write, the target is incomplete.
     */
    @Test
    void killWithTheSaveBufferFull() throws Exception {
        Path src = dir.resolve("src.qcow2");
        Path tgt = dir.resolve("tgt.qcow2");
        run("qemu-img", "create", "-q", "-f", "qcow2", src.toString(), "8M");
        run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 6M", src.toString());
        byte[] initial = content(src, "qcow2", dir);
        DaemonProcess d = daemon(src, "qcow2");
        try (QmpTestClient c = d.connect(); GuestWriter g = new GuestWriter(nbd, "disk", 7)) {
            c.executeOk("drive-backup", Map.of("device", "drive0", "target", tgt.toString(), "sync", "full",
                    "format", "qcow2", "speed", MIB, "x-perf", Map.of("cbw-buffer-size", 4 * GuestWriter.BLOCK)));
            c.executeOk("block-job-pause", Map.of("device", "drive0"));
            guestWrites(g, 60);
            JsonNode buffer = c.executeOk("query-block-jobs").get(0).get("x-cbw-buffer");
            assertThat(buffer.get("used").asLong()).as("buffer full: " + buffer).isEqualTo(4L * GuestWriter.BLOCK);
            assertThat(buffer.get("fallbacks").asLong()).as("later writes copied synchronously").isPositive();
            killBackupAndCheckSource(d, c, g, src, "qcow2", initial);
        } finally {
            d.close();
        }
        checkQcow2(tgt, true);
        assertThat(content(tgt, "qcow2", dir)).as("recognisably incomplete").isNotEqualTo(initial);
    }

    @Test
    void killDuringMirror() throws Exception {
        Path src = dir.resolve("src.qcow2");
        Path tgt = dir.resolve("tgt.qcow2");
        run("qemu-img", "create", "-q", "-f", "qcow2", src.toString(), "8M");
        run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 6M", src.toString());
        byte[] initial = content(src, "qcow2", dir);
        DaemonProcess d = daemon(src, "qcow2");
        try (QmpTestClient c = d.connect(); GuestWriter g = new GuestWriter(nbd, "disk", 2)) {
            c.executeOk("drive-mirror", Map.of("device", "drive0", "target", tgt.toString(), "sync", "full",
                    "format", "qcow2", "speed", MIB));
            guestWrites(g, 60);
            assertJobRunning(c);
            killNine(d);
            g.stop();
            checkQcow2(src, true);
            g.verify(content(src, "qcow2", dir), initial);
        } finally {
            d.close();
        }
        checkQcow2(tgt, true);
    }

    /** A chain base <- top (top holds part of the data); the device is top. */
    private byte[] chain(Path base, Path top) throws Exception {
        run("qemu-img", "create", "-q", "-f", "qcow2", base.toString(), "8M");
        run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 6M", base.toString());
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base.toString(), "-F", "qcow2", top.toString());
        run("qemu-io", "-f", "qcow2", "-c", "write -P 0x22 2M 2M", top.toString());
        return content(top, "qcow2", dir);
    }

    @ParameterizedTest(name = "{0}")
    @CsvSource({"block-stream", "block-commit"})
    void killDuringStreamOrActiveCommit(String command) throws Exception {
        Path base = dir.resolve("base.qcow2");
        Path top = dir.resolve("top.qcow2");
        byte[] initial = chain(base, top);
        DaemonProcess d = daemon(top, "qcow2");
        try (QmpTestClient c = d.connect(); GuestWriter g = new GuestWriter(nbd, "disk", 3)) {
            // slow enough that the job is still running after the guest's FUA writes on a loaded
            // machine (it is killed long before it could finish)
            c.executeOk(command, Map.of("device", "drive0", "speed", MIB / 8));
            guestWrites(g, 60);
            assertJobRunning(c);
            killNine(d);
            g.stop();
            for (Path p : List.of(base, top)) {
                checkQcow2(p, true);
            }
            // the chain stays readable and the guest-visible content is what was acknowledged
            g.verify(content(top, "qcow2", dir), initial);
        } finally {
            d.close();
        }
    }
}
