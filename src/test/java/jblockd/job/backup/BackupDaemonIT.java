package jblockd.job.backup;

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

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/** Backup and the job verbs over QMP against a real daemon process (reference/jobs.md, backup.md). */
class BackupDaemonIT {
    private static final Duration T = Duration.ofSeconds(20);

    @TempDir
    Path dir;
    private Path src;

    @BeforeEach
    void image() throws Exception {
        Proc.assumeTools("qemu-img", "qemu-io");
        src = dir.resolve("src.raw");
        Proc.ok("qemu-img", "create", "-q", "-f", "raw", src.toString(), "32M");
        Proc.ok("qemu-io", "-f", "raw", "-c", "write -P 0x21 0 32M", src.toString());
    }

    private DaemonProcess daemon() throws Exception {
        return DaemonProcess.start(dir, "--drive", "id=drive0,file=" + src + ",format=raw");
    }

    private static List<String> names(List<JsonNode> events) {
        return events.stream().map(e -> e.get("event").asText().equals("JOB_STATUS_CHANGE")
                ? "J(" + e.at("/data/status").asText() + ")" : e.get("event").asText()).toList();
    }

    @Test
    void driveBackupOverQmpHasQemusEventsQueryShapeAndCompletion() throws Exception {
        try (DaemonProcess d = daemon(); QmpTestClient c = d.connect()) {
            Path tgt = dir.resolve("t.raw");
            c.executeOk("drive-backup", Map.of("device", "drive0", "target", tgt.toString(), "sync", "full",
                    "speed", 8 << 20));
            assertThat(names(c.drainEvents())).containsExactly("J(created)", "J(running)", "J(paused)", "J(running)");
            JsonNode jobs = c.executeOk("query-block-jobs");
            assertThat(jobs).hasSize(1);
            JsonNode j = jobs.get(0);
            // QEMU 7.2's members in its order, then jblockd's save buffer (docs/backup.md)
            assertThat(QmpTestClient.memberNames(j)).containsExactly("auto-finalize", "io-status", "device",
                    "auto-dismiss", "busy", "len", "offset", "status", "paused", "speed", "ready", "type",
                    "x-cbw-buffer");
            assertThat(QmpTestClient.memberNames(j.get("x-cbw-buffer")))
                    .containsExactly("size", "used", "saves", "fallbacks");
            assertThat(j.at("/x-cbw-buffer/size").asLong()).isEqualTo(64L << 20);
            assertThat(j.get("device").asText()).isEqualTo("drive0");
            assertThat(j.get("type").asText()).isEqualTo("backup");
            assertThat(j.get("io-status").asText()).isEqualTo("ok");
            assertThat(j.get("len").asLong()).isEqualTo(32 << 20);
            assertThat(j.get("speed").asLong()).isEqualTo(8 << 20);
            JsonNode qj = c.executeOk("query-jobs").get(0);
            assertThat(QmpTestClient.memberNames(qj)).containsExactly("current-progress", "status", "total-progress",
                    "type", "id");

            JsonNode busy = c.executeError("drive-backup", Map.of("device", "drive0", "target",
                    dir.resolve("t2.raw").toString(), "sync", "full"));
            assertThat(busy.get("desc").asText())
                    .isEqualTo("Node 'drive0' is busy: block device is in use by block job: backup");
            c.executeOk("block-job-pause", Map.of("device", "drive0"));
            assertThat(c.executeError("block-job-pause", Map.of("device", "drive0")).get("desc").asText())
                    .isEqualTo("Job is already paused");
            c.waitEvent("JOB_STATUS_CHANGE", e -> e.at("/data/status").asText().equals("paused"), T);
            assertThat(c.executeOk("query-block-jobs").get(0).get("paused").asBoolean()).isTrue();
            c.executeOk("block-job-set-speed", Map.of("device", "drive0", "speed", 0));
            c.executeOk("block-job-resume", Map.of("device", "drive0"));
            JsonNode done = c.waitEvent("BLOCK_JOB_COMPLETED", T);
            assertThat(QmpTestClient.memberNames(done.get("data")))
                    .containsExactlyInAnyOrder("device", "len", "offset", "speed", "type");
            assertThat(done.at("/data/offset").asLong()).isEqualTo(32 << 20);
            c.waitEvent("JOB_STATUS_CHANGE", e -> e.at("/data/status").asText().equals("null"), T);
            assertThat(c.executeOk("query-block-jobs")).isEmpty();
            Proc.ok("qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", src.toString(), tgt.toString());
        }
    }

    @Test
    void argumentAndLookupErrorsOverTheWire() throws Exception {
        try (DaemonProcess d = daemon(); QmpTestClient c = d.connect()) {
            String t = dir.resolve("t.raw").toString();
            JsonNode e = c.executeError("drive-backup", Map.of("device", "nosuch", "target", t));
            assertThat(e.get("class").asText()).isEqualTo("DeviceNotFound");
            assertThat(e.get("desc").asText()).isEqualTo("Cannot find device='nosuch' nor node-name='nosuch'");
            assertThat(c.executeError("drive-backup", Map.of("device", "drive0", "target", t, "sync", "bogus"))
                    .get("desc").asText()).isEqualTo("Parameter 'sync' does not accept value 'bogus'");
            assertThat(c.executeError("drive-backup", Map.of("device", "drive0", "target", t, "mode", "bogus"))
                    .get("desc").asText()).isEqualTo("Parameter 'mode' does not accept value 'bogus'");
            assertThat(c.executeError("drive-backup", Map.of("device", "drive0", "sync", "full"))
                    .get("desc").asText()).isEqualTo("Parameter 'target' is missing");
            assertThat(c.executeError("drive-backup", Map.of("device", "drive0", "target", t, "speed", "x"))
                    .get("desc").asText()).isEqualTo("Invalid parameter type for 'speed', expected: integer");
            assertThat(c.executeError("drive-backup", Map.of("device", "drive0", "target", t, "bogus", 1))
                    .get("desc").asText()).isEqualTo("Parameter 'bogus' is unexpected");
            assertThat(c.executeError("drive-backup", Map.of("device", "drive0", "target", t,
                    "on-source-error", "bogus")).get("desc").asText())
                    .isEqualTo("Parameter 'on-source-error' does not accept value 'bogus'");
            c.drainEvents();
            assertThat(c.executeError("drive-backup", Map.of("device", "drive0", "target", t, "speed", -1))
                    .get("desc").asText()).isEqualTo("Parameter 'speed' expects a non-negative value");
            assertThat(names(c.drainEvents())).containsExactly("J(created)", "J(null)");

            JsonNode nf = c.executeError("block-job-cancel", Map.of("device", "nojob"));
            assertThat(nf.get("class").asText()).isEqualTo("DeviceNotActive");
            assertThat(nf.get("desc").asText()).isEqualTo("Block job 'nojob' not found");
            JsonNode nf2 = c.executeError("job-cancel", Map.of("id", "nojob"));
            assertThat(nf2.get("class").asText()).isEqualTo("GenericError");
            assertThat(nf2.get("desc").asText()).isEqualTo("Job not found");
        }
    }

    @Test
    void cancelWhileRunningAndQuitDuringABackupLeaveTheSourceIntact() throws Exception {
        Path pre = dir.resolve("pre.raw");
        Files.copy(src, pre);
        try (DaemonProcess d = daemon(); QmpTestClient c = d.connect()) {
            c.executeOk("drive-backup", Map.of("device", "drive0", "target", dir.resolve("c.raw").toString(),
                    "sync", "full", "speed", 4 << 20, "job-id", "b1"));
            c.drainEvents();
            c.executeOk("job-cancel", Map.of("id", "b1"));
            List<JsonNode> ev = c.drainEvents();
            assertThat(names(ev)).containsExactly("J(aborting)", "BLOCK_JOB_CANCELLED", "J(concluded)", "J(null)");
            JsonNode cancelled = ev.get(1).get("data");
            assertThat(cancelled.get("offset").asLong()).isLessThan(cancelled.get("len").asLong());

            c.executeOk("drive-backup", Map.of("device", "drive0", "target", dir.resolve("q.raw").toString(),
                    "sync", "full", "speed", 4 << 20));
            c.execute("quit");
            assertThat(d.waitFor(Duration.ofSeconds(20))).isZero();
        }
        Proc.ok("qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", pre.toString(), src.toString());
    }
}
