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
import org.junit.jupiter.params.provider.ValueSource;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/**
 * A qcow2 overlay over a backing file, exported over NBD, while a slow job has its filter above
 * the overlay: clients that negotiate structured replies (qemu-img, nbdinfo) must still read the
 * backing file's data, and the export's map must still show it as data. Before the one status
 * walk (jblockd.block.BlockStatus) the NBD server stopped at the job's filter and served the
 * backing data as {@code hole,zero}: "Content mismatch at offset 0!".
 */
class ChainUnderJobFiltersIT {
    private static final Duration T = Duration.ofSeconds(60);

    @TempDir
    Path dir;

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"backup-full", "backup-top", "mirror", "stream", "commit-active"})
    void exportReadsTheBackingDataWhileAJobFilterIsAboveTheOverlay(String job) throws Exception {
        for (String tool : List.of("qemu-img", "qemu-io", "nbdinfo")) {
            assumeTrue(Path.of("/usr/bin", tool).toFile().canExecute(), tool + " not installed");
        }
        Path base = dir.resolve("base.qcow2");
        Path top = dir.resolve("top.qcow2");
        Path ref = dir.resolve("ref.raw");
        run("qemu-img", "create", "-q", "-f", "qcow2", base.toString(), "16M");
        run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 8M", base.toString());
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base.toString(), "-F", "qcow2", top.toString());
        run("qemu-io", "-f", "qcow2", "-c", "write -P 0x22 4M 1M", top.toString());
        run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", top.toString(), ref.toString());
        String mapBefore = run("qemu-img", "map", "--output=json", "-f", "qcow2", top.toString());
        Path nbd = dir.resolve("nbd.sock");
        try (DaemonProcess d = DaemonProcess.start(dir,
                "--drive", "id=drive0,file=" + top + ",format=qcow2,node-name=top0",
                "--nbd-server", "addr.type=unix,addr.path=" + nbd,
                "--export", "type=nbd,id=exp0,device=drive0,name=d0,writable=on");
             QmpTestClient c = d.connect()) {
            String uri = "nbd+unix:///d0?socket=" + nbd;
            run("qemu-img", "compare", "-f", "raw", "-F", "raw", ref.toString(), uri);
            startSlowJob(c, job);
            assertThat(c.executeOk("query-block-jobs")).as("the job runs while the export is read").hasSize(1);
            run("qemu-img", "compare", "-f", "raw", "-F", "raw", ref.toString(), uri);
            String map = run("nbdinfo", "--map", uri);
            assertThat(map).as("nbdinfo --map during %s", job).contains("data").doesNotContain("0  8388608    3");
            assertThat(dataBytes(map)).as("bytes mapped as data during %s (qemu-img map before: %s)", job, mapBefore)
                    .isEqualTo(8L << 20);
            c.execute("block-job-cancel", Map.of("device", "drive0", "force", true));
            c.waitEvent("JOB_STATUS_CHANGE", e -> e.get("data").get("status").asText().equals("null"), T);
            run("qemu-img", "compare", "-f", "raw", "-F", "raw", ref.toString(), uri);
        }
    }

    private void startSlowJob(QmpTestClient c, String job) throws Exception {
        long speed = 64 << 10;
        switch (job) {
            case "backup-full", "backup-top" -> c.executeOk("drive-backup", Map.of("device", "drive0",
                    "target", dir.resolve("bk.qcow2").toString(), "format", "qcow2",
                    "sync", job.equals("backup-full") ? "full" : "top", "speed", speed));
            case "mirror" -> c.executeOk("drive-mirror", Map.of("device", "drive0",
                    "target", dir.resolve("mirror.qcow2").toString(), "format", "qcow2", "sync", "full",
                    "speed", speed));
            case "stream" -> c.executeOk("block-stream", Map.of("device", "drive0", "speed", speed));
            case "commit-active" -> c.executeOk("block-commit", Map.of("device", "drive0", "speed", speed));
            default -> throw new IllegalArgumentException(job);
        }
    }

    /** Sums the lengths of nbdinfo --map lines whose type is 0 (data). */
    private static long dataBytes(String map) {
        long sum = 0;
        for (String line : map.strip().split("\n")) {
            String[] f = line.strip().split("\\s+");
            if (f.length >= 3 && f[2].equals("0")) {
                sum += Long.parseLong(f[1]);
            }
        }
        return sum;
    }

    private static String run(String... cmd) throws IOException, InterruptedException {
        List<String> argv = new ArrayList<>(List.of(cmd));
        Process p = new ProcessBuilder(argv).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        assertThat(p.waitFor(60, TimeUnit.SECONDS)).isTrue();
        assertThat(p.exitValue()).as("%s%n%s", String.join(" ", argv), out).isZero();
        return out;
    }
}
