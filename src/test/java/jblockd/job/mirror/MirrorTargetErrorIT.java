package jblockd.job.mirror;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/**
 * Seed 000 for mirror target writes: drive-mirror {@code mode=existing} onto
 * {@code blkdebug:CONF:tgt.raw} whose rule fails the write at 1 MiB once. report fails the job and
 * leaves the drive on its source; ignore re-dirties the range and copies it again; stop and
 * enospc(ENOSPC) pause with io-status until resume. The completed targets equal the source.
 */
class MirrorTargetErrorIT {
    private static final long MIB = 1 << 20;
    private static final Duration T = Duration.ofSeconds(30);

    @TempDir
    Path dir;

    @ParameterizedTest(name = "{0}, errno {1}")
    @CsvSource({"report, 5", "ignore, 5", "stop, 5", "enospc, 28"})
    void targetWriteErrorPolicies(String policy, int errno) throws Exception {
        Tools.assumeTools("qemu-img", "qemu-io");
        Path src = dir.resolve("src.raw");
        Path tgt = dir.resolve("tgt.raw");
        Tools.ok("qemu-img", "create", "-q", "-f", "raw", src.toString(), "8M");
        Tools.write(src, "raw", 0x61, 0, 8 * MIB);
        Tools.ok("qemu-img", "create", "-q", "-f", "raw", tgt.toString(), "8M");
        Path conf = dir.resolve("w.conf");
        Files.writeString(conf, "[inject-error]\nevent = \"write_aio\"\nerrno = \"" + errno
                + "\"\nsector = \"2048\"\nonce = \"on\"\n");
        try (DaemonProcess d = DaemonProcess.start(dir, "--drive", "id=drive0,file=" + src + ",format=raw");
             QmpTestClient c = d.connect()) {
            c.executeOk("drive-mirror", Map.of("device", "drive0", "target", "blkdebug:" + conf + ":" + tgt,
                    "format", "raw", "mode", "existing", "sync", "full", "on-target-error", policy));
            JsonNode err = c.waitEvent("BLOCK_JOB_ERROR", T);
            assertThat(err.path("data").path("operation").asText()).isEqualTo("write");
            String action = err.path("data").path("action").asText();
            switch (policy) {
                case "report" -> {
                    assertThat(action).isEqualTo("report");
                    JsonNode done = c.waitEvent("BLOCK_JOB_COMPLETED", T);
                    assertThat(done.path("data").path("error").asText()).isEqualTo("Input/output error");
                    assertThat(c.executeOk("query-block").get(0).path("inserted").path("file").asText())
                            .isEqualTo(src.toString());
                    c.executeOk("quit");
                    return;
                }
                case "ignore" -> assertThat(action).isEqualTo("ignore");
                default -> {
                    assertThat(action).isEqualTo("stop");
                    c.waitEvent("JOB_STATUS_CHANGE", e -> e.path("data").path("status").asText().equals("paused"), T);
                    assertThat(c.executeOk("query-block-jobs").get(0).path("io-status").asText())
                            .isEqualTo(errno == 28 ? "nospace" : "failed");
                    assertThat(c.executeError("block-job-cancel", Map.of("device", "drive0")).path("desc").asText())
                            .isEqualTo("The block job for device 'drive0' is currently paused");
                    c.executeOk("block-job-resume", Map.of("device", "drive0"));
                }
            }
            c.waitEvent("BLOCK_JOB_READY", T);
            c.executeOk("block-job-complete", Map.of("device", "drive0"));
            JsonNode done = c.waitEvent("BLOCK_JOB_COMPLETED", T);
            assertThat(done.path("data").has("error")).isFalse();
            c.executeOk("quit");
        }
        Tools.ok("qemu-img", "compare", "-f", "raw", "-F", "raw", src.toString(), tgt.toString());
    }
}
