package jblockd.job.mirror;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/**
 * drive-mirror through the daemon process: READY, complete (pivot), cancel after READY, sync=top
 * target creation, parameter errors and the error policies with blkdebug; images checked with
 * qemu-img compare / check / info and qemu-io.
 */
class MirrorIT {
    private static final long MIB = 1 << 20;
    private static final Duration T = Duration.ofSeconds(30);

    @TempDir
    Path dir;
    private Path src;
    private Path tgt;

    @BeforeEach
    void images() throws Exception {
        Tools.assumeTools("qemu-img", "qemu-io");
        src = dir.resolve("src.raw");
        tgt = dir.resolve("tgt.raw");
        Tools.ok("qemu-img", "create", "-q", "-f", "raw", src.toString(), "16M");
        Tools.write(src, "raw", 0x41, 0, 3 * MIB);
        Tools.write(src, "raw", 0x42, 9 * MIB, 2 * MIB);
    }

    private DaemonProcess daemon(String file) throws Exception {
        return DaemonProcess.start(dir, "--drive", "id=drive0,file=" + file + ",format=raw");
    }

    @Test
    void driveMirrorReadyThenCompletePivotsOntoTheTarget() throws Exception {
        try (DaemonProcess d = daemon(src.toString()); QmpTestClient c = d.connect()) {
            c.executeOk("drive-mirror", Map.of("device", "drive0", "target", tgt.toString(), "sync", "full"));
            JsonNode ready = c.waitEvent("BLOCK_JOB_READY", T);
            assertThat(QmpTestClient.memberNames(ready.path("data")))
                    .containsExactlyInAnyOrder("device", "len", "offset", "speed", "type");
            assertThat(ready.path("data").path("len").asLong()).isEqualTo(16 * MIB);
            assertThat(ready.path("data").path("offset").asLong()).isEqualTo(16 * MIB);
            JsonNode job = c.executeOk("query-block-jobs").get(0);
            assertThat(job.path("ready").asBoolean()).isTrue();
            assertThat(job.path("status").asText()).isEqualTo("ready");
            assertThat(job.path("type").asText()).isEqualTo("mirror");
            assertThat(c.executeOk("query-block").get(0).path("inserted").path("file").asText()).isEqualTo(src.toString());
            c.executeOk("block-job-complete", Map.of("device", "drive0"));
            List<String> ev = StreamCommitIT.eventsUntilNull(c);
            assertThat(ev).containsSubsequence("J(waiting)", "J(pending)", "BLOCK_JOB_COMPLETED", "J(concluded)", "J(null)")
                    .doesNotContain("J(aborting)");
            JsonNode inserted = c.executeOk("query-block").get(0).path("inserted");
            assertThat(inserted.path("file").asText()).isEqualTo(tgt.toString());
            assertThat(c.executeOk("query-block-jobs").size()).isZero();
            c.executeOk("quit");
        }
        Tools.ok("qemu-img", "compare", "-f", "raw", "-F", "raw", src.toString(), tgt.toString());
    }

    @Test
    void cancelAfterReadyCompletesAndStaysOnTheSource() throws Exception {
        try (DaemonProcess d = daemon(src.toString()); QmpTestClient c = d.connect()) {
            c.executeOk("drive-mirror", Map.of("device", "drive0", "target", tgt.toString(), "sync", "full",
                    "granularity", 65536, "buf-size", 4 * MIB));
            c.waitEvent("BLOCK_JOB_READY", T);
            c.executeOk("block-job-cancel", Map.of("device", "drive0"));
            List<String> ev = StreamCommitIT.eventsUntilNull(c);
            assertThat(ev).containsSubsequence("J(waiting)", "J(pending)", "BLOCK_JOB_COMPLETED", "J(concluded)",
                    "J(null)").doesNotContain("BLOCK_JOB_CANCELLED", "J(aborting)");
            assertThat(c.executeOk("query-block").get(0).path("inserted").path("file").asText()).isEqualTo(src.toString());
            c.executeOk("quit");
        }
        Tools.ok("qemu-img", "compare", "-f", "raw", "-F", "raw", src.toString(), tgt.toString());
    }

    @Test
    void syncTopCreatesAQcow2TargetOverTheSourcesBacking() throws Exception {
        Path base = dir.resolve("base.qcow2");
        Path top = dir.resolve("top.qcow2");
        Path out = dir.resolve("out.qcow2");
        Tools.ok("qemu-img", "create", "-q", "-f", "qcow2", base.toString(), "16M");
        Tools.write(base, "qcow2", 0x11, 0, 8 * MIB);
        Tools.ok("qemu-img", "create", "-q", "-f", "qcow2", "-b", base.toString(), "-F", "qcow2", top.toString());
        Tools.write(top, "qcow2", 0x33, 4 * MIB, 2 * MIB);
        try (DaemonProcess d = DaemonProcess.start(dir, "--drive", "id=drive0,file=" + top + ",format=qcow2");
             QmpTestClient c = d.connect()) {
            c.executeOk("drive-mirror", Map.of("device", "drive0", "target", out.toString(), "sync", "top"));
            JsonNode ready = c.waitEvent("BLOCK_JOB_READY", T);
            assertThat(ready.path("data").path("len").asLong()).isEqualTo(2 * MIB);
            c.executeOk("block-job-complete", Map.of("device", "drive0"));
            StreamCommitIT.eventsUntilNull(c);
            JsonNode inserted = c.executeOk("query-block").get(0).path("inserted");
            assertThat(inserted.path("file").asText()).isEqualTo(out.toString());
            assertThat(inserted.path("backing_file_depth").asInt()).isEqualTo(1);
            c.executeOk("quit");
        }
        Tools.ok("qemu-img", "check", out.toString());
        assertThat(Tools.ok("qemu-img", "info", out.toString())).contains("backing file: " + base);
        Tools.ok("qemu-img", "compare", top.toString(), out.toString());
    }

    @Test
    void streamOfARawDriveWithoutBackingCompletesWithNothingToDo() throws Exception {
        try (DaemonProcess d = daemon(src.toString()); QmpTestClient c = d.connect()) {
            c.executeOk("block-stream", Map.of("device", "drive0"));
            JsonNode done = c.waitEvent("BLOCK_JOB_COMPLETED", T);
            assertThat(done.path("data").has("error")).isFalse();
            assertThat(done.path("data").path("len").asLong()).isZero();
            c.executeOk("quit");
        }
    }

    @Test
    void syncNoneCreatesATargetBackedByTheSourceAndIsReadyAtOnce() throws Exception {
        Path q = dir.resolve("src.qcow2");
        Path out = dir.resolve("none.qcow2");
        Tools.ok("qemu-img", "create", "-q", "-f", "qcow2", q.toString(), "16M");
        Tools.write(q, "qcow2", 0x44, 2 * MIB, 3 * MIB);
        try (DaemonProcess d = DaemonProcess.start(dir, "--drive", "id=drive0,file=" + q + ",format=qcow2");
             QmpTestClient c = d.connect()) {
            c.executeOk("drive-mirror", Map.of("device", "drive0", "target", out.toString(), "sync", "none"));
            JsonNode ready = c.waitEvent("BLOCK_JOB_READY", T);
            assertThat(ready.path("data").path("len").asLong()).isZero();
            c.executeOk("block-job-complete", Map.of("device", "drive0"));
            c.waitEvent("BLOCK_JOB_COMPLETED", T);
            JsonNode inserted = c.executeOk("query-block").get(0).path("inserted");
            assertThat(inserted.path("file").asText()).isEqualTo(out.toString());
            assertThat(inserted.path("backing_file").asText()).isEqualTo(q.toString());
            c.executeOk("quit");
        }
        Tools.ok("qemu-img", "check", out.toString());
        assertThat(Tools.ok("qemu-img", "info", out.toString())).contains("backing file: " + q);
        Tools.ok("qemu-img", "compare", q.toString(), out.toString());
    }

    @Test
    void parameterErrorsMatchQemu() throws Exception {
        try (DaemonProcess d = daemon(src.toString()); QmpTestClient c = d.connect()) {
            assertThat(c.executeError("drive-mirror", Map.of("device", "drive0", "target", tgt.toString(),
                    "sync", "full", "granularity", 1000)).path("desc").asText())
                    .isEqualTo("Parameter 'granularity' expects a power of 2");
            assertThat(c.executeError("drive-mirror", Map.of("device", "drive0", "target", tgt.toString(),
                    "sync", "full", "granularity", 256)).path("desc").asText())
                    .isEqualTo("Parameter 'granularity' expects a value in range [512B, 64MB]");
            assertThat(c.executeError("drive-mirror", Map.of("device", "drive0", "target", tgt.toString(),
                    "sync", "incremental")).path("desc").asText()).isEqualTo("Sync mode 'incremental' not supported");
            assertThat(c.executeError("drive-mirror", Map.of("device", "nope", "target", tgt.toString(),
                    "sync", "full")).path("desc").asText()).isEqualTo("Cannot find device='nope' nor node-name='nope'");
            c.drainEvents();
            assertThat(c.executeError("drive-mirror", Map.of("device", "drive0", "target", tgt.toString(),
                    "sync", "full", "speed", -1)).path("desc").asText())
                    .isEqualTo("Parameter 'speed' expects a non-negative value");
            assertThat(c.drainEvents().stream().map(e -> e.path("data").path("status").asText()).toList())
                    .containsExactly("created", "null");
            c.executeOk("drive-mirror", Map.of("device", "drive0", "target", tgt.toString(), "sync", "full",
                    "speed", 1024 * 1024));
            assertThat(c.executeError("block-job-complete", Map.of("device", "drive0")).path("desc").asText())
                    .isEqualTo("Job 'drive0' in state 'running' cannot accept command verb 'complete'");
            assertThat(c.executeError("drive-mirror", Map.of("device", "drive0", "target",
                    dir.resolve("t2.raw").toString(), "sync", "full")).path("desc").asText())
                    .isEqualTo("Node 'drive0' is busy: block device is in use by block job: mirror");
            c.executeOk("block-job-cancel", Map.of("device", "drive0", "force", true));
            c.waitEvent("BLOCK_JOB_CANCELLED", T);
            c.executeOk("quit");
        }
    }

    /** Seed 000 for mirror: a blkdebug rule fails the source read at 1 MiB (once, or always). */
    @ParameterizedTest(name = "{0}, errno {1}")
    @CsvSource({"report, 5", "ignore, 5", "stop, 5", "enospc, 28", "enospc, 5"})
    void sourceReadErrorPolicies(String policy, int errno) throws Exception {
        Path conf = dir.resolve("blkdebug.conf");
        Files.writeString(conf, "[inject-error]\nevent = \"read_aio\"\nerrno = \"" + errno
                + "\"\nsector = \"2048\"\nonce = \"on\"\n");
        try (DaemonProcess d = daemon("blkdebug:" + conf + ":" + src); QmpTestClient c = d.connect()) {
            c.executeOk("drive-mirror", Map.of("device", "drive0", "target", tgt.toString(), "sync", "full",
                    "on-source-error", policy));
            JsonNode err = c.waitEvent("BLOCK_JOB_ERROR", T);
            assertThat(err.path("data").path("operation").asText()).isEqualTo("read");
            String action = err.path("data").path("action").asText();
            switch (policy + "/" + errno) {
                case "report/5", "enospc/5" -> {
                    assertThat(action).isEqualTo("report");
                    List<String> ev = StreamCommitIT.eventsUntilNull(c);
                    assertThat(ev).containsSubsequence("J(aborting)", "BLOCK_JOB_COMPLETED", "J(null)");
                    c.executeOk("quit");
                    return;
                }
                case "ignore/5" -> assertThat(action).isEqualTo("ignore");
                default -> {
                    assertThat(action).isEqualTo("stop");
                    c.waitEvent("JOB_STATUS_CHANGE", e -> e.path("data").path("status").asText().equals("paused"), T);
                    JsonNode job = c.executeOk("query-block-jobs").get(0);
                    assertThat(job.path("io-status").asText()).isEqualTo(errno == 28 ? "nospace" : "failed");
                    assertThat(job.path("paused").asBoolean()).isTrue();
                    c.executeOk("block-job-resume", Map.of("device", "drive0"));
                }
            }
            c.waitEvent("BLOCK_JOB_READY", T);
            assertThat(c.executeOk("query-block-jobs").get(0).path("io-status").asText()).isEqualTo("ok");
            c.executeOk("block-job-complete", Map.of("device", "drive0"));
            c.waitEvent("BLOCK_JOB_COMPLETED", T);
            c.executeOk("quit");
        }
        Tools.ok("qemu-img", "compare", "-f", "raw", "-F", "raw", src.toString(), tgt.toString());
    }
}
