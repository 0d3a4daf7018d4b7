package jblockd.job.mirror;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/**
 * Mirror under a steady guest write load: qemu-io writes through the daemon's NBD export while
 * the mirror runs, reaches READY and pivots (or is cancelled). The same qemu-io script applied
 * to a local copy of the source gives the expected image; the target must equal it exactly
 * (qemu-img compare), so no guest write was lost, before, during or after the pivot.
 */
class MirrorGuestWritesIT {
    private static final long MIB = 1 << 20;
    private static final Duration T = Duration.ofSeconds(30);

    @TempDir
    Path dir;
    private Path src;
    private Path tgt;
    private Path expected;
    private Process writer;

    @BeforeEach
    void images() throws Exception {
        Tools.assumeTools("qemu-img", "qemu-io");
        src = dir.resolve("src.raw");
        tgt = dir.resolve("tgt.raw");
        expected = dir.resolve("expected.raw");
        Tools.ok("qemu-img", "create", "-q", "-f", "raw", src.toString(), "32M");
        Tools.write(src, "raw", 0x41, 0, 8 * MIB);
        Tools.write(src, "raw", 0x42, 20 * MIB, 4 * MIB);
        Files.copy(src, expected);
    }

    @AfterEach
    void stopWriter() {
        if (writer != null) {
            writer.destroyForcibly();
        }
    }

    /** qemu-io commands: {@code n} 64 KiB writes with distinct patterns, a pause after each. */
    private static List<String> script(int n, int sleepMs, long seed) {
        Random r = new Random(seed);
        List<String> cmds = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            long off = (long) r.nextInt(32 * 16 - 1) * 65536 + (r.nextBoolean() ? 4096 : 0);
            cmds.add("-c");
            cmds.add("write -P " + (1 + i % 250) + " " + off + " 64k");
            if (sleepMs > 0) {
                cmds.add("-c");
                cmds.add("sleep " + sleepMs);
            }
        }
        return cmds;
    }

    private Process startWriter(List<String> script) throws Exception {
        return Tools.startGuestWriter(dir, script);
    }

    private DaemonProcess daemon() throws Exception {
        return Tools.daemonWithExport(dir, "id=drive0,file=" + src + ",format=raw");
    }

    /** write-blocking: guest writes (many not granule-aligned) also go to the target as they happen. */
    @org.junit.jupiter.params.ParameterizedTest(name = "copy-mode {0}")
    @org.junit.jupiter.params.provider.ValueSource(strings = {"background", "write-blocking"})
    void completeUnderSteadyGuestWritesLosesNothing(String copyMode) throws Exception {
        List<String> script = script(600, 3, 11);
        Tools.ok(Tools.qemuIo("raw", expected.toString(), script));
        try (DaemonProcess d = daemon(); QmpTestClient c = d.connect()) {
            writer = startWriter(script);
            Thread.sleep(200);
            c.executeOk("drive-mirror", Map.of("device", "drive0", "target", tgt.toString(), "sync", "full",
                    "copy-mode", copyMode));
            c.waitEvent("BLOCK_JOB_READY", T);
            Thread.sleep(200);
            assertThat(writer.isAlive()).as("the guest still writes when the job completes").isTrue();
            c.executeOk("block-job-complete", Map.of("device", "drive0"));
            c.waitEvent("BLOCK_JOB_COMPLETED", T);
            assertThat(c.executeOk("query-block").get(0).path("inserted").path("file").asText())
                    .isEqualTo(tgt.toString());
            assertThat(writer.waitFor(60, TimeUnit.SECONDS)).isTrue();
            assertThat(writer.exitValue()).as(Files.readString(dir.resolve("writer.log"))).isZero();
            assertThat(Files.readString(dir.resolve("writer.log"))).doesNotContain("error", "failed");
            c.executeOk("quit");
        }
        Tools.ok("qemu-img", "compare", "-f", "raw", "-F", "raw", expected.toString(), tgt.toString());
    }

    @Test
    void blockdevMirrorOfANodeExportedByNodeNamePivotsTheExport() throws Exception {
        List<String> script = script(300, 3, 13);
        Tools.ok(Tools.qemuIo("raw", expected.toString(), script));
        Tools.ok("qemu-img", "create", "-q", "-f", "raw", tgt.toString(), "32M");
        try (DaemonProcess d = DaemonProcess.start(dir, "--nbd-server",
                "addr.type=unix,addr.path=" + dir.resolve("nbd.sock")); QmpTestClient c = d.connect()) {
            c.executeOk("blockdev-add", Map.of("driver", "raw", "node-name", "src0",
                    "file", Map.of("driver", "file", "filename", src.toString())));
            c.executeOk("blockdev-add", Map.of("driver", "raw", "node-name", "tgt0",
                    "file", Map.of("driver", "file", "filename", tgt.toString())));
            c.executeOk("block-export-add", Map.of("type", "nbd", "id", "e0", "node-name", "src0", "name", "disk",
                    "writable", true));
            writer = startWriter(script);
            Thread.sleep(100);
            assertThat(c.executeError("blockdev-mirror", Map.of("device", "src0", "target", "tgt0", "sync", "full"))
                    .path("desc").asText()).isEqualTo("Invalid job ID ''");
            c.executeOk("blockdev-mirror", Map.of("job-id", "m0", "device", "src0", "target", "tgt0", "sync", "full"));
            c.waitEvent("BLOCK_JOB_READY", T);
            assertThat(writer.isAlive()).isTrue();
            c.executeOk("block-job-complete", Map.of("device", "m0"));
            c.waitEvent("BLOCK_JOB_COMPLETED", T);
            assertThat(writer.waitFor(60, TimeUnit.SECONDS)).isTrue();
            assertThat(writer.exitValue()).isZero();
            c.executeOk("quit");
        }
        Tools.ok("qemu-img", "compare", "-f", "raw", "-F", "raw", expected.toString(), tgt.toString());
    }

    @Test
    void cancelAfterReadyLeavesTheSourceInUseAndAnExactCopy() throws Exception {
        List<String> script = script(200, 2, 12);
        Tools.ok(Tools.qemuIo("raw", expected.toString(), script));
        try (DaemonProcess d = daemon(); QmpTestClient c = d.connect()) {
            writer = startWriter(script);
            c.executeOk("drive-mirror", Map.of("device", "drive0", "target", tgt.toString(), "sync", "full"));
            c.waitEvent("BLOCK_JOB_READY", T);
            assertThat(writer.waitFor(60, TimeUnit.SECONDS)).isTrue();
            assertThat(writer.exitValue()).isZero();
            c.executeOk("block-job-cancel", Map.of("device", "drive0"));
            JsonNode done = c.waitEvent("BLOCK_JOB_COMPLETED", T);
            assertThat(done.path("data").has("error")).isFalse();
            assertThat(c.executeOk("query-block").get(0).path("inserted").path("file").asText())
                    .isEqualTo(src.toString());
            // the guest goes on writing to the source; the target keeps the copy of the cancel
            writer = startWriter(List.of("-c", "write -P 0x77 0 64k"));
            assertThat(writer.waitFor(30, TimeUnit.SECONDS)).isTrue();
            c.executeOk("quit");
        }
        Tools.ok("qemu-img", "compare", "-f", "raw", "-F", "raw", expected.toString(), tgt.toString());
        Tools.assertPattern(src, "raw", 0x77, 0, 65536);
    }
}
