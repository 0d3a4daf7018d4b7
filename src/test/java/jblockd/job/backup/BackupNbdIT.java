package jblockd.job.backup;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/**
 * Point in time as guests see it: the source is exported over NBD by the real daemon, a slow
 * drive-backup runs, and qemu-io writes new patterns over the whole disk through the export
 * (a sequential sweep, then random writes). The target must equal the pre-backup copy and the
 * source must hold the new data. Exports by device and by node-name (no device) both go through
 * the copy-before-write filter.
 */
class BackupNbdIT {
    private static final int MIB = 1 << 20;
    private static final int SIZE_MIB = 32;

    @TempDir
    Path dir;

    @BeforeEach
    void tools() {
        Proc.assumeTools("qemu-img", "qemu-io");
    }

    @ParameterizedTest(name = "{0} source, {1} target, export by {2}, seed {3}")
    @CsvSource({"raw, raw, device, 1", "qcow2, qcow2, device, 2", "raw, qcow2, node, 3", "qcow2, raw, node, 4"})
    void guestWritesOverNbdDuringBackupDoNotReachTheTarget(String srcFmt, String tgtFmt, String by, long seed)
            throws Exception {
        Path src = dir.resolve("src." + srcFmt);
        Proc.ok("qemu-img", "create", "-q", "-f", srcFmt, src.toString(), SIZE_MIB + "M");
        Proc.ok("qemu-io", "-f", srcFmt, "-c", "write -P 0x11 0 10M", "-c", "write -P 0x12 16M 12M", src.toString());
        Path pre = dir.resolve("pre." + srcFmt);
        Files.copy(src, pre, StandardCopyOption.REPLACE_EXISTING);
        Path sock = dir.resolve("nbd.sock");
        boolean byNode = by.equals("node");
        List<String> args = new ArrayList<>();
        if (byNode) {
            args.addAll(List.of("--blockdev", "driver=" + srcFmt + ",node-name=src0,file.driver=file,file.filename=" + src));
        } else {
            args.addAll(List.of("--drive", "id=drive0,file=" + src + ",format=" + srcFmt));
        }
        args.addAll(List.of("--nbd-server", "addr.type=unix,addr.path=" + sock,
                "--export", "type=nbd,id=e0,node-name=" + (byNode ? "src0" : "drive0") + ",name=e0,writable=on"));
        String url = "nbd+unix:///e0?socket=" + sock;
        Path tgt = dir.resolve("tgt." + tgtFmt);
        byte[] model = new byte[SIZE_MIB * MIB];
        try (DaemonProcess d = DaemonProcess.start(dir, args.toArray(String[]::new)); QmpTestClient c = d.connect()) {
            // the source's old content, as the model starts
            System.arraycopy(readAll(url), 0, model, 0, model.length);
            Map<String, Object> backup = new HashMap<>(Map.of("device", byNode ? "src0" : "drive0",
                    "target", tgt.toString(), "format", tgtFmt, "sync", "full", "speed", 8 * MIB));
            if (byNode) {
                backup.put("job-id", "b0");
            }
            c.executeOk("drive-backup", backup);
            Random rnd = new Random(seed);
            // random writes
            List<String> cmd = new ArrayList<>(List.of("qemu-io", "-f", "raw"));
            for (int i = 0; i < 200; i++) {
                int len = (1 + rnd.nextInt(32)) * 4096;
                int off = rnd.nextInt((SIZE_MIB * MIB - len) / 512) * 512;
                byte v = (byte) (1 + rnd.nextInt(255));
                cmd.addAll(List.of("-c", "write -P " + (v & 0xff) + " " + off + " " + len));
                java.util.Arrays.fill(model, off, off + len, v);
            }
            cmd.add(url);
            Proc.ok(cmd.toArray(String[]::new));
            JsonCheck.assertRunning(c); // the random writes met a running backup
            // sequential sweep of new data over the whole disk, in one qemu-io run
            cmd = new ArrayList<>(List.of("qemu-io", "-f", "raw"));
            byte sweep = (byte) (0x60 + seed);
            for (int off = 0; off < SIZE_MIB * MIB; off += 2 * MIB) {
                cmd.addAll(List.of("-c", "write -P " + (sweep & 0xff) + " " + off + " " + 2 * MIB));
                java.util.Arrays.fill(model, off, off + 2 * MIB, sweep);
            }
            cmd.add(url);
            Proc.ok(cmd.toArray(String[]::new));
            var done = c.waitEvent("BLOCK_JOB_COMPLETED", Duration.ofSeconds(30));
            assertThat(done.get("data").has("error")).isFalse();
            assertThat(java.util.Arrays.equals(readAll(url), model)).as("source holds the guest writes").isTrue();
        }
        Proc.ok("qemu-img", "compare", "-q", "-f", srcFmt, "-F", tgtFmt, pre.toString(), tgt.toString());
        if (tgtFmt.equals("qcow2")) {
            Proc.ok("qemu-img", "check", "-q", tgt.toString());
        }
    }

    private byte[] readAll(String url) throws Exception {
        Path out = dir.resolve("read.raw");
        Files.deleteIfExists(out);
        Proc.ok("qemu-img", "convert", "-f", "raw", "-O", "raw", url, out.toString());
        return Files.readAllBytes(out);
    }

    /** Small checks on query results. */
    static final class JsonCheck {
        static void assertRunning(QmpTestClient c) throws Exception {
            var jobs = c.executeOk("query-block-jobs");
            assertThat(jobs).hasSize(1);
            assertThat(jobs.get(0).get("status").asText()).isIn("running", "paused");
        }
    }
}
