package jblockd.job.backup;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.Errno;
import jblockd.commands.JobCommands.BlockJobInfo;
import jblockd.job.Job;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.IoStatus;
import jblockd.qapi.MirrorSyncMode;

/**
 * The error matrix of seed 000 for backup: {report, ignore, stop, enospc} x {source read,
 * target write} x {EIO, ENOSPC}, with a blkdebug rule failing the 1 MiB chunk at 1 MiB once.
 * Checks the events and their order, status, io-status, resume, the job's end and the data.
 */
class BackupErrorPolicyIT {
    private static final int SIZE = 8 << 20;

    @TempDir
    Path dir;
    private BackupHarness h;

    @BeforeEach
    void setUp() {
        Proc.assumeTools("qemu-img", "qemu-io");
        h = new BackupHarness();
        h.assumeDrivers("raw", "blkdebug");
    }

    @AfterEach
    void tearDown() {
        if (h != null) {
            h.close();
        }
    }

    @ParameterizedTest(name = "{0} on {1}, errno {2}")
    @CsvSource({
            "report, read, 5", "report, read, 28", "report, write, 5", "report, write, 28",
            "ignore, read, 5", "ignore, read, 28", "ignore, write, 5", "ignore, write, 28",
            "stop, read, 5", "stop, read, 28", "stop, write, 5", "stop, write, 28",
            "enospc, read, 5", "enospc, read, 28", "enospc, write, 5", "enospc, write, 28",
    })
    void errorPolicy(String policyName, String side, int errno) throws Exception {
        BlockdevOnError policy = BlockdevOnError.fromWire(policyName);
        boolean read = side.equals("read");
        Path conf = dir.resolve("blkdebug.conf");
        Files.writeString(conf, "[inject-error]\nevent = \"" + (read ? "read_aio" : "write_aio") + "\"\nerrno = \""
                + errno + "\"\nsector = \"2048\"\nonce = \"on\"\n");
        Path src = dir.resolve("src.raw");
        Path tgt = dir.resolve("tgt.raw");
        Proc.ok("qemu-img", "create", "-q", "-f", "raw", src.toString(), String.valueOf(SIZE));
        Proc.ok("qemu-img", "create", "-q", "-f", "raw", tgt.toString(), String.valueOf(SIZE));
        Proc.ok("qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 8M", src.toString());
        h.drive("drive0", read ? "blkdebug:" + conf + ":" + src : src.toString(), "raw");
        h.node("tgt0", read ? tgt.toString() : "blkdebug:" + conf + ":" + tgt, "raw");

        Job job = h.backup.blockdevBackup(BackupHarness.blockdev("drive0", "tgt0", MirrorSyncMode.FULL, null,
                read ? policy : null, read ? null : policy));
        Errno e = Errno.fromCode(errno);
        String strerror = e.strerror();
        boolean stops = policy == BlockdevOnError.STOP || (policy == BlockdevOnError.ENOSPC && errno == 28);
        boolean reports = policy == BlockdevOnError.REPORT || (policy == BlockdevOnError.ENOSPC && errno != 28);
        String op = read ? "read" : "write";
        if (stops) {
            h.events.awaitSequence("ERROR(" + op + ",stop)", "J(paused)");
            BlockJobInfo info = h.jobCommands.queryBlockJobs().getFirst();
            assertThat(info.ioStatus()).isEqualTo(errno == 28 ? IoStatus.NOSPACE : IoStatus.FAILED);
            assertThat(info.paused()).isTrue();
            assertThat(info.offset()).isLessThan(info.len());
            org.assertj.core.api.Assertions.assertThatThrownBy(() -> h.jobCommands.blockJobCancel("drive0", false))
                    .hasMessage("The block job for device 'drive0' is currently paused");
            h.jobCommands.blockJob("drive0").userResume();
            assertThat(job.info().ioStatus()).isEqualTo(IoStatus.OK);
        }
        assertThat(job.awaitEnd(20, TimeUnit.SECONDS)).isTrue();
        h.events.await("J(null)");
        var ev = h.events.events();
        long errors = ev.stream().filter(s -> s.startsWith("ERROR")).count();
        assertThat(errors).isEqualTo(1);
        if (reports) {
            assertThat(ev).containsSubsequence("ERROR(" + op + ",report)", "J(aborting)",
                    "COMPLETED(" + strerror + ")", "J(concluded)", "J(null)");
        } else if (stops) {
            assertThat(ev).containsSubsequence("ERROR(" + op + ",stop)", "J(paused)", "J(running)", "J(waiting)",
                    "J(pending)", "COMPLETED", "J(concluded)", "J(null)");
            Proc.ok("qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", src.toString(), tgt.toString());
        } else {
            // ignore (SPEC §4, QEMU 7.2 backup_loop()): the failed chunk is retried, so a transient
            // error leaves a complete target and a job that ends without error
            assertThat(ev).containsSubsequence("ERROR(" + op + ",ignore)", "J(waiting)", "J(pending)", "COMPLETED",
                    "J(concluded)", "J(null)");
            assertThat(ev).doesNotContain("J(aborting)");
            Proc.ok("qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", src.toString(), tgt.toString());
        }
    }

    @ParameterizedTest(name = "persistent {0} error")
    @CsvSource({"read", "write"})
    void persistentErrorWithIgnoreIsRetriedUntilCancelled(String side) throws Exception {
        boolean read = side.equals("read");
        Path conf = dir.resolve("always.conf");
        Files.writeString(conf, "[inject-error]\nevent = \"" + (read ? "read_aio" : "write_aio")
                + "\"\nerrno = \"5\"\nsector = \"2048\"\n");
        Path src = dir.resolve("src.raw");
        Path tgt = dir.resolve("tgt.raw");
        Proc.ok("qemu-img", "create", "-q", "-f", "raw", src.toString(), String.valueOf(SIZE));
        Proc.ok("qemu-img", "create", "-q", "-f", "raw", tgt.toString(), String.valueOf(SIZE));
        Proc.ok("qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 8M", src.toString());
        h.drive("drive0", read ? "blkdebug:" + conf + ":" + src : src.toString(), "raw");
        h.node("tgt0", read ? tgt.toString() : "blkdebug:" + conf + ":" + tgt, "raw");
        BlockdevOnError ignore = BlockdevOnError.IGNORE;
        Job job = h.backup.blockdevBackup(BackupHarness.blockdev("drive0", "tgt0", MirrorSyncMode.FULL, null,
                read ? ignore : null, read ? null : ignore));
        String err = "ERROR(" + side + ",ignore)";
        h.events.awaitSequence(err, err, err);
        // everything but the failing chunk is copied; that one keeps being retried (with back-off)
        assertThat(job.info().status().wire()).isEqualTo("running");
        assertThat(job.info().offset()).isEqualTo(SIZE - (1 << 20));
        h.jobCommands.blockJobCancel("drive0", false);
        assertThat(job.awaitEnd(20, TimeUnit.SECONDS)).isTrue();
        h.events.await("J(null)");
        assertThat(h.events.events()).containsSubsequence(err, "J(aborting)", "CANCELLED", "J(concluded)", "J(null)")
                .doesNotContain("COMPLETED");
    }

    @org.junit.jupiter.api.Test
    void failedCopyBeforeWriteFailsTheGuestWriteNotTheJob() throws Exception {
        Path conf = dir.resolve("tgt.conf");
        Files.writeString(conf, "[inject-error]\nevent = \"write_aio\"\nerrno = \"5\"\n");
        Path src = dir.resolve("src.raw");
        Path tgt = dir.resolve("tgt.raw");
        Proc.ok("qemu-img", "create", "-q", "-f", "raw", src.toString(), String.valueOf(SIZE));
        Proc.ok("qemu-img", "create", "-q", "-f", "raw", tgt.toString(), String.valueOf(SIZE));
        Proc.ok("qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 8M", src.toString());
        var drive = h.drive("drive0", src.toString(), "raw");
        h.node("tgt0", "blkdebug:" + conf + ":" + tgt, "raw");
        // sync=none: only guest writes copy, and every copy to the target fails
        Job job = h.backup.blockdevBackup(BackupHarness.blockdev("drive0", "tgt0", MirrorSyncMode.NONE, null,
                null, BlockdevOnError.REPORT));
        h.events.clear();
        org.assertj.core.api.Assertions.assertThatThrownBy(() ->
                        drive.root().write(0, java.nio.ByteBuffer.wrap(new byte[4096]), false))
                .isInstanceOfSatisfying(jblockd.block.IoError.class,
                        e -> assertThat(e.errno()).isEqualTo(Errno.EIO));
        // the job is untouched (on-target-error is for the background copy only) and the source
        // was not overwritten
        assertThat(h.events.events()).isEmpty();
        assertThat(job.info().status().wire()).isEqualTo("running");
        Proc.ok("qemu-io", "-f", "raw", "-r", "-U", "-c", "read -P 0x5a 0 64k", src.toString());
    }
}
