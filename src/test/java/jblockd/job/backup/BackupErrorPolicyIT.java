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
            // ignore: the run carries on and ends with the error (SPEC §4); only that chunk is missing
            assertThat(ev).containsSubsequence("ERROR(" + op + ",ignore)", "J(aborting)",
                    "COMPLETED(" + strerror + ")", "J(concluded)", "J(null)");
            Proc.ok("qemu-io", "-f", "raw", "-c", "read -P 0x5a 0 1M", "-c", "read -P 0 1M 1M",
                    "-c", "read -P 0x5a 2M 6M", tgt.toString());
        }
    }
}
