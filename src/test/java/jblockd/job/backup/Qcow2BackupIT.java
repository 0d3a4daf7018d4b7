package jblockd.job.backup;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Arrays;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import jblockd.commands.BackupCommands.DriveBackupArgs;
import jblockd.device.Device;
import jblockd.job.Job;
import jblockd.qapi.MirrorSyncMode;
import jblockd.qapi.NewImageMode;

/**
 * drive-backup with raw and qcow2 on both sides: point in time under guest writes (sequential
 * and random, several seeds), qemu-img check of qcow2 targets, sync=top and sync=none targets
 * with their backing files (reference/backup.md §3).
 */
class Qcow2BackupIT {
    private static final int SIZE = 16 << 20;

    @TempDir
    Path dir;
    private BackupHarness h;

    @BeforeEach
    void setUp() {
        Proc.assumeTools("qemu-img", "qemu-io");
        h = new BackupHarness();
        h.assumeDrivers("raw", "qcow2");
    }

    @AfterEach
    void tearDown() {
        if (h != null) {
            h.close();
        }
    }

    @ParameterizedTest(name = "{0} -> {1}, seed {2}")
    @CsvSource({"raw, qcow2, 1", "qcow2, qcow2, 2", "qcow2, raw, 3", "raw, raw, 4"})
    void pointInTimeUnderSequentialAndRandomGuestWrites(String srcFmt, String tgtFmt, long seed) throws Exception {
        Path src = dir.resolve("src." + srcFmt);
        Proc.ok("qemu-img", "create", "-q", "-f", srcFmt, src.toString(), String.valueOf(SIZE));
        Proc.ok("qemu-io", "-f", srcFmt, "-c", "write -P 0x31 0 6M", "-c", "write -P 0x32 9M 5M", src.toString());
        Path pre = dir.resolve("pre." + srcFmt);
        Files.copy(src, pre, StandardCopyOption.REPLACE_EXISTING);
        Device drive = h.drive("drive0", src.toString(), srcFmt);
        Path tgt = dir.resolve("tgt." + tgtFmt);

        Job job = h.backup.driveBackup(BackupHarness.drive("drive0", tgt.toString(), tgtFmt, MirrorSyncMode.FULL,
                null, 8L << 20));
        Random rnd = new Random(seed);
        byte[] model = new byte[SIZE];
        boolean[] written = new boolean[SIZE / 4096];
        long sweepAt = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(400);
        boolean swept = false;
        int n = 0;
        while ((!swept || !job.info().status().wire().matches("concluded|null")) && n < 20000) {
            int off;
            int len;
            if (!swept && System.nanoTime() > sweepAt) {
                for (off = 0; off < SIZE; off += 512 * 1024) {
                    write(drive, model, written, off, 512 * 1024, (byte) (0x70 + seed));
                }
                swept = true;
                continue;
            }
            len = (1 + rnd.nextInt(8)) * 4096;
            off = rnd.nextInt((SIZE - len) / 4096) * 4096;
            write(drive, model, written, off, len, (byte) (1 + rnd.nextInt(255)));
            n++;
            if (!swept) {
                Thread.sleep(10);
            }
        }
        assertThat(job.awaitEnd(30, TimeUnit.SECONDS)).isTrue();
        h.events.await("J(null)");
        assertThat(h.events.events()).contains("COMPLETED");
        Proc.ok("qemu-img", "compare", "-q", "-f", srcFmt, "-F", tgtFmt, pre.toString(), tgt.toString());
        if (tgtFmt.equals("qcow2")) {
            Proc.ok("qemu-img", "check", "-q", tgt.toString());
        }
        // the source holds the new data
        drive.root().flush();
        ByteBuffer back = ByteBuffer.allocate(SIZE);
        drive.root().read(0, back);
        assertThat(Arrays.equals(back.array(), model)).isTrue();
    }

    private static void write(Device d, byte[] model, boolean[] written, int off, int len, byte v) throws Exception {
        byte[] b = new byte[len];
        Arrays.fill(b, v);
        d.root().write(off, ByteBuffer.wrap(b), false);
        System.arraycopy(b, 0, model, off, len);
        for (int i = off / 4096; i < (off + len) / 4096; i++) {
            written[i] = true;
        }
    }

    @Test
    void syncTopCopiesOnlyTheTopLayerOntoTheSourcesBackingFile() throws Exception {
        Path base = dir.resolve("base.qcow2");
        Path top = dir.resolve("top.qcow2");
        Proc.ok("qemu-img", "create", "-q", "-f", "qcow2", base.toString(), "64M");
        Proc.ok("qemu-io", "-f", "qcow2", "-c", "write -P 0x0b 0 16M", base.toString());
        Proc.ok("qemu-img", "create", "-q", "-f", "qcow2", "-b", base.toString(), "-F", "qcow2", top.toString());
        Proc.ok("qemu-io", "-f", "qcow2", "-c", "write -P 0x0c 2M 3M", "-c", "write -P 0x0d 30M 1M", top.toString());
        h.drive("drive0", top.toString(), "qcow2");
        Path tgt = dir.resolve("t.qcow2");
        Job job = h.backup.driveBackup(BackupHarness.drive("drive0", tgt.toString(), null, MirrorSyncMode.TOP, null,
                null));
        assertThat(job.awaitEnd(20, TimeUnit.SECONDS)).isTrue();
        assertThat(job.info().len()).isEqualTo(4L << 20);
        assertThat(job.info().offset()).isEqualTo(4L << 20);
        String info = Proc.ok("qemu-img", "info", "--output=json", tgt.toString());
        assertThat(info).contains("\"backing-filename\": \"" + base + "\"").contains("\"backing-filename-format\": \"qcow2\"");
        Proc.ok("qemu-img", "check", "-q", tgt.toString());
        Proc.ok("qemu-img", "compare", "-U", "-q", top.toString(), tgt.toString());
        // only the top layer's clusters were written into the target
        String map = Proc.ok("qemu-img", "map", "--output=json", tgt.toString());
        long inTop = 0;
        var m = java.util.regex.Pattern.compile("\"length\": (\\d+), \"depth\": 0").matcher(map);
        while (m.find()) {
            inTop += Long.parseLong(m.group(1));
        }
        assertThat(inTop).isEqualTo(4L << 20);
    }

    @Test
    void syncNoneTargetIsBackedByTheSourceImage() throws Exception {
        Path src = dir.resolve("s.qcow2");
        Proc.ok("qemu-img", "create", "-q", "-f", "qcow2", src.toString(), "16M");
        Proc.ok("qemu-io", "-f", "qcow2", "-c", "write -P 0x44 0 16M", src.toString());
        Device drive = h.drive("drive0", src.toString(), "qcow2");
        Path tgt = dir.resolve("t.qcow2");
        Job job = h.backup.driveBackup(BackupHarness.drive("drive0", tgt.toString(), null, MirrorSyncMode.NONE, null,
                null));
        drive.root().write(4 << 20, ByteBuffer.wrap(new byte[8192]), false);
        assertThat(job.info().offset()).isEqualTo(64 * 1024);
        assertThat(job.info().len()).isEqualTo(16 << 20);
        h.jobCommands.blockJobCancel("drive0", false);
        assertThat(h.events.events()).contains("CANCELLED");
        String info = Proc.ok("qemu-img", "info", "--output=json", tgt.toString());
        assertThat(info).contains("\"backing-filename\": \"" + src + "\"");
        Proc.ok("qemu-img", "check", "-U", "-q", tgt.toString());
        // the old data of the overwritten cluster is in the target itself
        Proc.ok("qemu-io", "-r", "-U", "-f", "qcow2", "-c", "read -P 0x44 4M 64k", tgt.toString());
    }

    @Test
    void compressToQcow2IsRefusedClearly() throws Exception {
        Path src = dir.resolve("s.qcow2");
        Proc.ok("qemu-img", "create", "-q", "-f", "qcow2", src.toString(), "1M");
        h.drive("drive0", src.toString(), "qcow2");
        org.assertj.core.api.Assertions.assertThatThrownBy(() -> h.backup.driveBackup(new DriveBackupArgs(null,
                        "drive0", dir.resolve("t.qcow2").toString(), null, null, NewImageMode.ABSOLUTE_PATHS, null,
                        null, null, true, null, null, null, null, null, null)))
                .hasMessage("Compressed writes to qcow2 are not implemented in jblockd");
    }
}
