package jblockd.job.mirror;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/**
 * Seed 000 for block-stream through the daemon with blkdebug: a write error into the top (the
 * drive is {@code blkdebug:CONF:top.qcow2}, the rule hits the first cluster the stream
 * allocates). Read errors in the chain are covered in-JVM (StreamCommitTest): the qcow2 driver
 * does not open a {@code blkdebug:} backing file name yet (it resolves it as a relative path). report fails the job, ignore completes with the
 * error and keeps the backing file, stop/enospc pause with io-status and resume finishes.
 */
class StreamErrorPolicyIT {
    private static final long MIB = 1 << 20;
    private static final Duration T = Duration.ofSeconds(30);

    @TempDir
    Path dir;

    private Path chain(String side, int errno) throws Exception {
        Tools.assumeTools("qemu-img", "qemu-io");
        Path base = dir.resolve("base.qcow2");
        Path mid = dir.resolve("mid.qcow2");
        Path top = dir.resolve("top.qcow2");
        Tools.ok("qemu-img", "create", "-q", "-f", "qcow2", base.toString(), "16M");
        Tools.write(base, "qcow2", 0x11, 0, 4 * MIB);
        Tools.ok("qemu-img", "create", "-q", "-f", "qcow2", "-b", base.toString(), "-F", "qcow2", mid.toString());
        Tools.write(mid, "qcow2", 0x22, 4 * MIB, 4 * MIB);
        JsonNode map = QmpTestClient.json(Tools.ok("qemu-img", "map", "--output=json", mid.toString()));
        long midData = 0;
        for (JsonNode e : map) {
            if (e.path("start").asLong() == 4 * MIB) {
                midData = e.path("offset").asLong();
            }
        }
        Path conf = dir.resolve("rule.conf");
        String backing = mid.toString();
        if (side.equals("read")) {
            Files.writeString(conf, "[inject-error]\nevent = \"read_aio\"\nerrno = \"" + errno + "\"\nsector = \""
                    + (midData + 512 * 1024) / 512 + "\"\nonce = \"on\"\n");
            backing = "blkdebug:" + conf + ":" + mid;
        }
        Tools.ok("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", "qcow2", top.toString(), "16M");
        Tools.write(top, "qcow2", 0x33, 8 * MIB, 4 * MIB);
        if (side.equals("write")) {
            long size = Files.size(top);
            Files.writeString(conf, "[inject-error]\nevent = \"write_aio\"\nerrno = \"" + errno + "\"\nsector = \""
                    + (size + 65535) / 65536 * 65536 / 512 + "\"\nonce = \"on\"\n");
            return Path.of("blkdebug:" + conf + ":" + top);
        }
        return top;
    }

    @ParameterizedTest(name = "{0} on {1}, errno {2}")
    @CsvSource({"report, write, 5", "ignore, write, 5", "stop, write, 5", "enospc, write, 28",
            "enospc, write, 5"})
    void streamErrorPolicy(String policy, String side, int errno) throws Exception {
        Path drive = chain(side, errno);
        Path top = dir.resolve("top.qcow2");
        try (DaemonProcess d = DaemonProcess.start(dir, "--drive", "id=drive0,file=" + drive + ",format=qcow2");
             QmpTestClient c = d.connect()) {
            c.executeOk("block-stream", Map.of("device", "drive0", "on-error", policy));
            JsonNode err = c.waitEvent("BLOCK_JOB_ERROR", T);
            assertThat(err.path("data").path("operation").asText()).isEqualTo(side);
            String action = err.path("data").path("action").asText();
            boolean stops = policy.equals("stop") || (policy.equals("enospc") && errno == 28);
            if (policy.equals("enospc") && errno != 28) {
                policy = "report";
            }
            if (stops) {
                assertThat(action).isEqualTo("stop");
                c.waitEvent("JOB_STATUS_CHANGE", e -> e.path("data").path("status").asText().equals("paused"), T);
                JsonNode job = c.executeOk("query-block-jobs").get(0);
                assertThat(job.path("io-status").asText()).isEqualTo(errno == 28 ? "nospace" : "failed");
                if (side.equals("read")) {
                    // the chunks before the failing one (guest offset 4.5 MiB) are done
                    assertThat(job.path("offset").asLong()).isEqualTo(9 * 512 * 1024);
                }
                c.executeOk("block-job-resume", Map.of("device", "drive0"));
            } else {
                assertThat(action).isEqualTo(policy);
            }
            JsonNode done = c.waitEvent("BLOCK_JOB_COMPLETED", T);
            JsonNode blk = c.executeOk("query-block").get(0).path("inserted");
            if (stops) {
                assertThat(done.path("data").has("error")).isFalse();
                assertThat(blk.path("backing_file_depth").asInt()).isZero();
            } else {
                assertThat(done.path("data").path("error").asText())
                        .isEqualTo(errno == 28 ? "No space left on device" : "Input/output error");
                assertThat(blk.path("backing_file_depth").asInt()).as("backing file left in place").isEqualTo(2);
            }
            c.executeOk("quit");
        }
        // Exit 3 = leaked clusters only, no corruption: the qcow2 driver does not yet free the
        // clusters of a failed data write (QEMU's qcow2_alloc_cluster_abort() does).
        Tools.Result check = Tools.run("qemu-img", "check", top.toString());
        assertThat(check.exit()).as(check.out()).isIn(0, 3);
        assertThat(check.out()).doesNotContain("ERROR");
        if (policy.equals("stop") || (policy.equals("enospc") && errno == 28)) {
            assertThat(Tools.ok("qemu-img", "info", top.toString())).doesNotContain("backing file:");
        }
        Tools.assertPattern(top, "qcow2", 0x33, 8 * MIB, 4 * MIB);
        if (!side.equals("read") || policy.equals("stop") || policy.equals("enospc")) {
            Tools.assertPattern(top, "qcow2", 0x11, 0, 4 * MIB);
            Tools.assertPattern(top, "qcow2", 0x22, 4 * MIB, 4 * MIB);
        }
    }
}
