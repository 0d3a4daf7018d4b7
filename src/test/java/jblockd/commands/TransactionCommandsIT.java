package jblockd.commands;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.QmpTestClient;

/**
 * jblockd's {@code transaction} where there is no QEMU 7.2 behaviour to copy
 * (TransactionQemuDifferentialIT compares the rest): the action types jblockd cannot perform
 * yet are refused, never ignored; the cases that crash or hang QEMU 7.2 get a clear error or a
 * clean rollback; a rollback leaves the graph exactly as it was; and seed 004's drive-backup
 * rules hold inside a transaction too.
 */
class TransactionCommandsIT {
    private static final Map<String, Object> ABORT = Map.of("type", "abort", "data", Map.of());

    @TempDir
    Path dir;
    private DaemonProcess daemon;
    private QmpTestClient c;

    @BeforeEach
    void start() throws Exception {
        ExternalTools.assumeTools("qemu-img");
        List<String> args = new ArrayList<>();
        for (int i = 0; i < 2; i++) {
            Path img = dir.resolve("src" + i + ".raw");
            ExternalTools.ok("qemu-img", "create", "-q", "-f", "raw", img.toString(), "8M");
            args.addAll(List.of("--drive", "id=drive" + i + ",file=" + img + ",format=raw"));
        }
        daemon = DaemonProcess.start(dir, args.toArray(String[]::new));
        c = daemon.connect();
    }

    @AfterEach
    void stop() {
        if (c != null) {
            c.close();
        }
        if (daemon != null) {
            daemon.close();
        }
    }

    private JsonNode tx(Map<String, Object> properties, Object... actions) throws Exception {
        Map<String, Object> args = new LinkedHashMap<>();
        args.put("actions", List.of(actions));
        if (properties != null) {
            args.put("properties", properties);
        }
        return c.execute("transaction", args);
    }

    private Map<String, Object> driveBackup(String jobId, String device, String file) {
        Map<String, Object> d = new LinkedHashMap<>();
        if (jobId != null) {
            d.put("job-id", jobId);
        }
        d.put("device", device);
        d.put("target", dir.resolve(file).toString());
        d.put("sync", "full");
        return Map.of("type", "drive-backup", "data", d);
    }

    /** JOB_STATUS_CHANGE as {@code J(status id)}, other events by name, in order. */
    private List<String> events() {
        List<String> out = new ArrayList<>();
        for (JsonNode e : c.drainEvents()) {
            out.add(normalize(e));
        }
        return out;
    }

    private static String normalize(JsonNode e) {
        JsonNode d = e.get("data");
        return e.get("event").asText().equals("JOB_STATUS_CHANGE")
                ? "J(" + d.get("status").asText() + " " + d.get("id").asText() + ")"
                : e.get("event").asText();
    }

    /** {@link #events()}, then more until {@code last} was among them (bounded). */
    private List<String> eventsUntil(String last) throws Exception {
        List<String> out = new ArrayList<>(events());
        long deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
        while (!out.contains(last)) {
            assertThat(System.nanoTime()).as("%s not seen in %s", last, out).isLessThan(deadline);
            JsonNode e = c.events().poll(50, java.util.concurrent.TimeUnit.MILLISECONDS);
            if (e != null) {
                out.add(normalize(e));
            }
        }
        return out;
    }

    private List<String> nodeNames() throws Exception {
        List<String> names = new ArrayList<>();
        for (JsonNode n : c.executeOk("query-named-block-nodes", Map.of())) {
            names.add(n.get("node-name").asText());
        }
        return names;
    }

    /**
     * Every action type of QEMU 7.2 is performed now (blockdev-snapshot-internal-sync was the
     * last, RbdSnapshotQemuIT); one refused in its prepare still rolls back the others: an
     * internal snapshot of a raw file, which has none.
     */
    @Test
    void anInternalSnapshotRefusedInItsTurnRollsBackTheOthers() throws Exception {
        List<String> before = nodeNames();
        Map<String, Object> action = Map.of("type", "blockdev-snapshot-internal-sync",
                "data", Map.of("device", "drive0", "name", "s"));
        String refusal = "Block format 'raw' used by device 'drive0' does not support internal snapshots";
        JsonNode err = tx(null, action).get("error");
        assertThat(err.get("class").asText()).isEqualTo("GenericError");
        assertThat(err.get("desc").asText()).isEqualTo(refusal);
        // after a prepared backup of the device, whose job now blocks it (QEMU's op blocker comes
        // before the format check): the backup is rolled back, the refusal is the reply
        c.drainEvents();
        err = tx(null, driveBackup("jA", "drive0", "internal.raw"), action).get("error");
        assertThat(err.get("desc").asText()).isEqualTo("Node 'drive0' is busy: block device is in use by block job: backup");
        assertThat(events()).containsExactly("J(created jA)", "J(aborting jA)", "J(concluded jA)", "J(null jA)");
        // in grouped mode QEMU's own refusal comes first, as its prepare checks it first
        err = tx(Map.of("completion-mode", "grouped"), action).get("error");
        assertThat(err.get("class").asText()).isEqualTo("GenericError");
        assertThat(err.get("desc").asText()).isEqualTo(
                "Action 'blockdev-snapshot-internal-sync' does not support Transaction property completion-mode = grouped");
        assertThat(nodeNames()).isEqualTo(before);
    }

    @Test
    void theSameDeviceTwiceIsRefusedAsBusyWhereQemuAsserts() throws Exception {
        List<String> before = nodeNames();
        JsonNode err = tx(null, driveBackup("jA", "drive0", "a.raw"), driveBackup("jB", "drive0", "b.raw"))
                .get("error");
        assertThat(err.get("desc").asText()).isEqualTo("Node 'drive0' is busy: block device is in use by block job: backup");
        assertThat(events()).containsExactly("J(created jA)", "J(aborting jA)", "J(concluded jA)", "J(null jA)");
        assertThat(nodeNames()).isEqualTo(before);
        assertThat(c.executeOk("query-block-jobs")).isEmpty();
    }

    @Test
    void aGroupedRollbackOfTwoBackupsAbortsBothNewestFirstWhereQemuHangs() throws Exception {
        List<String> before = nodeNames();
        JsonNode err = tx(Map.of("completion-mode", "grouped"), driveBackup("jA", "drive0", "a.raw"),
                driveBackup("jB", "drive1", "b.raw"), ABORT).get("error");
        assertThat(err.get("desc").asText()).isEqualTo("Transaction aborted using Abort action");
        // the same order as an individual rollback (QEMU 7.2, individual, observed)
        assertThat(events()).containsExactly("J(created jA)", "J(created jB)", "J(aborting jB)", "J(concluded jB)",
                "J(null jB)", "J(aborting jA)", "J(concluded jA)", "J(null jA)");
        assertThat(nodeNames()).as("filters and targets gone").isEqualTo(before);
        assertThat(c.executeOk("query-block-jobs")).isEmpty();
        // the targets drive-backup created stay on disk, as in QEMU
        assertThat(Files.exists(dir.resolve("a.raw"))).isTrue();
        // and the devices are free again: the same transaction without abort runs
        assertThat(tx(Map.of("completion-mode", "grouped"), driveBackup("jA", "drive0", "a2.raw"),
                driveBackup("jB", "drive1", "b2.raw")).has("return")).isTrue();
        c.waitEvent("JOB_STATUS_CHANGE", e -> e.at("/data/id").asText().equals("jA")
                && e.at("/data/status").asText().equals("null"), Duration.ofSeconds(20));
    }

    @Test
    void seed004RulesOfDriveBackupHoldInATransaction() throws Exception {
        JsonNode err = tx(null, driveBackup("jA", "nosuch", "n.raw")).get("error");
        assertThat(err.get("class").asText()).isEqualTo("DeviceNotFound");
        assertThat(err.get("desc").asText()).isEqualTo("Cannot find device='nosuch' nor node-name='nosuch'");
        // sync may be left out (full), and the job id defaults to the drive name
        JsonNode ok = tx(null, Map.of("type", "drive-backup", "data", Map.of("device", "drive1",
                "target", dir.resolve("s.raw").toString())));
        assertThat(ok.has("return")).as(ok.toString()).isTrue();
        c.waitEvent("JOB_STATUS_CHANGE", e -> e.at("/data/id").asText().equals("drive1")
                && e.at("/data/status").asText().equals("null"), Duration.ofSeconds(20));
        ExternalTools.ok("qemu-img", "compare", "-q", "-f", "raw", "-F", "raw",
                dir.resolve("src1.raw").toString(), dir.resolve("s.raw").toString());
    }

    @Test
    void aTransactionOfOneBackupIsTheCommandItself() throws Exception {
        assertThat(tx(null, driveBackup(null, "drive0", "one.raw")).has("return")).isTrue();
        List<String> viaTransaction = eventsUntil("J(null drive0)");
        assertThat(c.execute("drive-backup", Map.of("device", "drive0", "target", dir.resolve("two.raw").toString(),
                "sync", "full")).has("return")).isTrue();
        List<String> viaCommand = eventsUntil("J(null drive0)");
        assertThat(viaCommand).isEqualTo(viaTransaction).containsExactly("J(created drive0)", "J(running drive0)",
                "J(paused drive0)", "J(running drive0)", "J(waiting drive0)", "J(pending drive0)",
                "BLOCK_JOB_COMPLETED", "J(concluded drive0)", "J(null drive0)");
    }
}
