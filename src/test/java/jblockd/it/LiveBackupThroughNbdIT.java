package jblockd.it;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/**
 * The product's main path, end to end with real peers: a guest (qemu-io over NBD) overwrites
 * the whole disk while a slow drive-backup runs; the target must hold the disk as it was when
 * the command returned. Covers both ways an export can name its disk (node-name of the device's
 * root, and device=), because a filter inserted by the backup has to sit under both.
 */
class LiveBackupThroughNbdIT {
    private static final Duration T = Duration.ofSeconds(60);

    @TempDir
    Path dir;

    @ParameterizedTest(name = "{0} source, export by {1}")
    @CsvSource({"raw, node-name", "qcow2, node-name", "raw, device", "qcow2, device"})
    void guestOverwritingTheDiskDuringBackupLeavesThePointInTimeCopy(String format, String exportBy) throws Exception {
        for (String tool : List.of("qemu-img", "qemu-io")) {
            assumeTrue(Path.of("/usr/bin", tool).toFile().canExecute(), tool + " not installed");
        }
        Path src = dir.resolve("src." + format);
        Path pre = dir.resolve("pre.raw");
        Path tgt = dir.resolve("tgt." + format);
        run("qemu-img", "create", "-q", "-f", format, src.toString(), "16M");
        run("qemu-io", "-f", format, "-c", "write -P 0x5a 0 12M", src.toString());
        run("qemu-img", "convert", "-f", format, "-O", "raw", src.toString(), pre.toString());
        Path nbd = dir.resolve("nbd.sock");
        String exportTarget = exportBy.equals("device") ? "device=drive0" : "node-name=root0";
        try (DaemonProcess d = DaemonProcess.start(dir,
                "--drive", "id=drive0,file=" + src + ",format=" + format + ",node-name=root0",
                "--nbd-server", "addr.type=unix,addr.path=" + nbd,
                "--export", "type=nbd,id=exp0," + exportTarget + ",name=disk,writable=on");
             QmpTestClient c = d.connect()) {
            // 4 MiB/s over 16 MiB: the guest's writes land long before the copy gets there.
            c.executeOk("drive-backup", Map.of("device", "drive0", "target", tgt.toString(), "sync", "full",
                    "format", format, "speed", 4 << 20));
            String uri = "nbd+unix:///disk?socket=" + nbd;
            assertThat(c.executeOk("query-block-jobs").get(0).get("offset").asLong())
                    .as("the background copy is still far from done when the guest starts writing")
                    .isLessThan(8 << 20);
            // Copy-before-write copies count as progress (as in QEMU), so this write itself
            // drives the job's offset to the end.
            run("qemu-io", "-f", "raw", "-c", "write -P 0xa5 0 16M", uri);
            assertThat(c.waitEvent("BLOCK_JOB_COMPLETED", T).get("data").has("error")).isFalse();
            // Target: the disk as it was; source: what the guest wrote.
            run("qemu-img", "compare", "-U", "-f", "raw", "-F", format, pre.toString(), tgt.toString());
            run("qemu-io", "-r", "-f", "raw", "-c", "read -P 0xa5 0 16M", uri);
        }
        if (format.equals("qcow2")) {
            run("qemu-img", "check", tgt.toString());
        }
    }

    private static void run(String... cmd) throws IOException, InterruptedException {
        List<String> argv = new ArrayList<>(List.of(cmd));
        Process p = new ProcessBuilder(argv).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        assertThat(p.waitFor(60, TimeUnit.SECONDS)).isTrue();
        assertThat(p.exitValue()).as("%s%n%s", String.join(" ", argv), out).isZero();
        if (argv.getFirst().equals("qemu-io")) {
            // qemu-io exits 0 even when a command fails; its message says so.
            assertThat(out).as(String.join(" ", argv)).doesNotContain("failed").doesNotContain("Pattern verification");
        }
    }
}
