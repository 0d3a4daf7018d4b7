package jblockd.commands;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.JsonShape;
import jblockd.testsupport.QmpTestClient;

/**
 * {@code transaction} side by side with QEMU 7.2 ({@code qemu-system-x86_64 -M none}): the same
 * QMP sequence on both, comparing the job events (with job ids, in order) and the replies (error
 * class and text). Every argument error of transactions.md §3, {@code abort} alone and after a
 * backup, rollbacks, two good backups, individual against grouped completion with one target
 * failing through blkdebug, grouped cancel, success, manual finalize and a paused member.
 * Progress values are not compared (they depend on timing and on the rate limiter).
 * <p>
 * Not compared, because QEMU 7.2 breaks: the same device backed up twice in one transaction
 * (QEMU asserts in bdrv_do_drained_end; jblockd refuses the second as busy) and the rollback of
 * a grouped transaction with two backups (QEMU hangs waiting for an unstarted job; jblockd rolls
 * both back); TransactionCommandsIT covers jblockd's side of both.
 */
class TransactionQemuDifferentialIT {
    private static final String SIZE = "16M";

    @TempDir
    static Path dir;
    static Process qemu;
    static DaemonProcess jblockd;
    static QmpTestClient q;
    static QmpTestClient j;

    @BeforeAll
    static void start() throws Exception {
        ExternalTools.assumeTools("qemu-system-x86_64", "qemu-img", "qemu-io");
        for (String peer : List.of("q", "j")) {
            for (int i = 0; i < 2; i++) {
                Path img = dir.resolve(peer + "-src" + i + ".raw");
                ExternalTools.ok("qemu-img", "create", "-q", "-f", "raw", img.toString(), SIZE);
                ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 0x5" + i + " 0 " + SIZE, img.toString());
            }
        }
        Path qsock = dir.resolve("qemu.sock");
        List<String> qcmd = new ArrayList<>(List.of("qemu-system-x86_64", "-M", "none", "-nodefaults", "-display",
                "none", "-qmp", "unix:" + qsock + ",server=on,wait=off"));
        List<String> jargs = new ArrayList<>();
        for (int i = 0; i < 2; i++) {
            qcmd.addAll(List.of("-drive", "if=none,id=drive" + i + ",file=" + dir.resolve("q-src" + i + ".raw")
                    + ",format=raw"));
            jargs.addAll(List.of("--drive", "id=drive" + i + ",file=" + dir.resolve("j-src" + i + ".raw")
                    + ",format=raw"));
        }
        qemu = new ProcessBuilder(qcmd).redirectErrorStream(true).redirectOutput(dir.resolve("qemu.log").toFile())
                .start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (!Files.exists(qsock) && System.nanoTime() < deadline) {
            Thread.sleep(25); // waiting for QEMU to create its socket, not synchronising with it
        }
        q = QmpTestClient.connectUnix(qsock);
        Files.createDirectories(dir.resolve("j"));
        jblockd = DaemonProcess.start(dir.resolve("j"), jargs.toArray(String[]::new));
        j = jblockd.connect();
    }

    @AfterAll
    static void stop() throws InterruptedException {
        JsonShape.stopPair(q, j, qemu, jblockd);
    }

    /** One peer's view: normalized events (with job ids) and replies, in order. */
    private static final class Trace {
        final QmpTestClient c;
        final String peer;
        final List<String> log = new ArrayList<>();
        int mark;

        Trace(QmpTestClient c, String peer) {
            this.c = c;
            this.peer = peer;
        }

        String file(String name) {
            return dir.resolve(peer + "-" + name).toString();
        }

        JsonNode exec(String cmd, Object args) throws IOException {
            JsonNode r = c.execute(cmd, args);
            for (JsonNode e : c.drainEvents()) {
                log.add(normalize(e));
            }
            log.add(r.has("error") ? cmd + " -> " + r.at("/error/class").asText() + ": " + r.at("/error/desc").asText()
                    : cmd + " -> ok");
            return r;
        }

        /** {@code transaction} with these actions (and properties, when not null). */
        JsonNode tx(Map<String, Object> properties, Object... actions) throws IOException {
            Map<String, Object> args = new LinkedHashMap<>();
            args.put("actions", List.of(actions));
            if (properties != null) {
                args.put("properties", properties);
            }
            return exec("transaction", args);
        }

        /** A raw target node of the sources' size; {@code failing}: every data write fails (EIO). */
        void target(String node, boolean failing) throws Exception {
            ExternalTools.ok("qemu-img", "create", "-q", "-f", "raw", file(node + ".raw"), SIZE);
            Map<String, Object> file = Map.of("driver", "file", "filename", file(node + ".raw"));
            Object child = failing
                    ? Map.of("driver", "blkdebug", "image", file,
                            "inject-error", List.of(Map.of("event", "write_aio", "errno", 5)))
                    : file;
            exec("blockdev-add", Map.of("driver", "raw", "node-name", node, "file", child));
        }

        /** The status of each job of query-block-jobs, by id (QEMU lists the newest first). */
        void logStatuses() throws IOException {
            JsonNode jobs = exec("query-block-jobs", null).get("return");
            List<String> s = new ArrayList<>();
            jobs.forEach(x -> s.add(x.get("device").asText() + "=" + x.get("status").asText()));
            s.sort(null);
            log.add("jobs " + s);
        }

        /** A node's bitmaps: name, recording, count, newest first. */
        void logBitmaps(String node) throws IOException {
            List<String> out = new ArrayList<>();
            for (JsonNode n : exec("query-named-block-nodes", null).get("return")) {
                if (n.get("node-name").asText().equals(node)) {
                    for (JsonNode b : n.path("dirty-bitmaps")) {
                        out.add(b.path("name").asText() + ":" + b.get("recording").asBoolean() + ":"
                                + b.get("count").asLong());
                    }
                }
            }
            log.add("bitmaps " + out);
        }

        void await(String normalized) throws IOException, InterruptedException {
            for (int i = mark; i < log.size(); i++) {
                if (log.get(i).equals(normalized)) {
                    mark = i + 1;
                    return;
                }
            }
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (System.nanoTime() < deadline) {
                JsonNode e = c.events().poll(50, TimeUnit.MILLISECONDS);
                if (e != null) {
                    String n = normalize(e);
                    log.add(n);
                    if (n.equals(normalized)) {
                        mark = log.size();
                        return;
                    }
                }
            }
            throw new AssertionError(peer + ": " + normalized + " not seen; log " + log);
        }

        /** Later awaits look only at what is logged from here on. */
        void markNow() {
            mark = log.size();
        }

        /** Waits until every one of {@code normalized} is in the log after the mark, in any order. */
        void awaitAll(String... normalized) throws IOException, InterruptedException {
            int from = mark;
            int last = from;
            for (String n : normalized) {
                mark = from;
                await(n);
                last = Math.max(last, mark);
            }
            mark = last;
        }

        static String normalize(JsonNode e) {
            JsonNode d = e.get("data");
            return switch (e.get("event").asText()) {
                case "JOB_STATUS_CHANGE" -> "J(" + d.get("status").asText() + " " + d.get("id").asText() + ")";
                case "BLOCK_JOB_ERROR" -> "ERROR(" + d.get("device").asText() + "," + d.get("operation").asText()
                        + "," + d.get("action").asText() + ")";
                case "BLOCK_JOB_COMPLETED" -> "COMPLETED(" + d.get("device").asText()
                        + (d.has("error") ? "," + d.get("error").asText() : "") + ")";
                case "BLOCK_JOB_CANCELLED" -> "CANCELLED(" + d.get("device").asText() + ")";
                case "BLOCK_JOB_PENDING" -> "PENDING(" + d.get("id").asText() + ")";
                default -> e.get("event").asText();
            };
        }
    }

    @FunctionalInterface
    private interface Scenario {
        void run(Trace t) throws Exception;
    }

    private static void compare(Scenario s) throws Exception {
        // two sequences, as BackupQemuDifferentialIT: a reply and the events around it may come
        // in either order on QEMU 7.2 (jobs.md §4), so only each order is the contract
        compare(s, events -> events);
    }

    /**
     * As {@link #compare(Scenario)}, with both peers' events seen through {@code view}: for
     * independent jobs only each job's own sequence is the contract, not how two jobs' events
     * interleave (a fresh-clone CI run saw QEMU 7.2 finish jA's cancel after jB's).
     */
    private static void compare(Scenario s, java.util.function.UnaryOperator<List<String>> view) throws Exception {
        Trace tq = new Trace(q, "q");
        Trace tj = new Trace(j, "j");
        q.drainEvents();
        j.drainEvents();
        s.run(tq);
        s.run(tj);
        assertThat(view.apply(events(tj.log))).as("events, jblockd vs QEMU 7.2").isEqualTo(view.apply(events(tq.log)));
        assertThat(replies(tj.log)).as("replies, jblockd vs QEMU 7.2").isEqualTo(replies(tq.log));
    }

    /** Events regrouped by job (stable: each job's own order kept), jobs by id. */
    private static List<String> eachJobInOrder(List<String> events) {
        List<String> out = new ArrayList<>(events);
        out.sort(java.util.Comparator.comparing(TransactionQemuDifferentialIT::jobOf));
        return out;
    }

    private static String jobOf(String event) {
        java.util.regex.Matcher m = java.util.regex.Pattern.compile("\\((?:\\w+ )?(j\\w+)").matcher(event);
        return m.find() ? m.group(1) : "";
    }

    private static void compareIgnoringPausesWhileAborting(Scenario s) throws Exception {
        compare(s, TransactionQemuDifferentialIT::withoutPausesWhileAborting);
    }

    /**
     * Drops J(paused x)/J(running x): when QEMU drains the group for the cancel is not fixed, so
     * the comparison is of the group's fate (created, aborting, cancelled, concluded, null).
     */
    private static List<String> withoutPausesWhileAborting(List<String> events) {
        List<String> out = new ArrayList<>();
        for (String e : events) {
            if (!e.startsWith("J(paused") && !e.startsWith("J(running")) {
                out.add(e);
            }
        }
        return out;
    }

    private static boolean isEvent(String entry) {
        return entry.matches("[A-Z_]+\\(.*\\)");
    }

    private static List<String> events(List<String> log) {
        return log.stream().filter(TransactionQemuDifferentialIT::isEvent).toList();
    }

    private static List<String> replies(List<String> log) {
        return log.stream().filter(e -> !isEvent(e))
                .map(e -> e.replace(dir + "/q-", dir + "/X-").replace(dir + "/j-", dir + "/X-")).toList();
    }

    private static final Map<String, Object> GROUPED = Map.of("completion-mode", "grouped");

    private static Map<String, Object> action(String type, Map<String, Object> data) {
        return Map.of("type", type, "data", data);
    }

    private static Map<String, Object> backup(String jobId, String device, String target, Object... kv) {
        Map<String, Object> d = new LinkedHashMap<>(Map.of("job-id", jobId, "device", device, "target", target,
                "sync", "full"));
        for (int i = 0; i < kv.length; i += 2) {
            d.put((String) kv[i], kv[i + 1]);
        }
        return action("blockdev-backup", d);
    }

    private static Map<String, Object> driveBackup(Trace t, String jobId, String device, String file) {
        return action("drive-backup", Map.of("job-id", jobId, "device", device, "target", t.file(file),
                "sync", "full"));
    }

    private static final Map<String, Object> ABORT = action("abort", Map.of());

    @Test
    void argumentErrorsRefuseTheWholeTransactionBeforeAnythingIsPrepared() throws Exception {
        compare(t -> {
            t.tx(null, Map.of("type", "nosuch", "data", Map.of()));
            t.tx(null, Map.of("type", "block-dirty-bitmap-add"));
            t.tx(null, Map.of("data", Map.of()));
            t.tx(null, action("abort", Map.of("bogus", 1)));
            t.tx(Map.of("completion-mode", "bogus"), ABORT);
            t.tx(Map.of("bogus", 1), ABORT);
            t.tx(null, Map.of("type", "abort", "data", Map.of(), "bogus", 1));
            t.exec("transaction", Map.of("actions", "x"));
            t.exec("transaction", Map.of("actions", List.of("x")));
            t.tx(null, Map.of("type", "abort", "data", "x"));
            t.tx(null, Map.of("type", 1, "data", Map.of()));
            t.exec("transaction", Map.of());
            t.exec("transaction", Map.of("actions", List.of(), "properties", "x"));
            // validation covers every action before any prepare: the abort would fail first
            t.tx(null, ABORT, action("drive-backup", Map.of("device", "drive0", "target", t.file("v.raw"),
                    "sync", "full", "bogus", 1)));
            t.tx(null, ABORT, Map.of("type", "nosuch", "data", Map.of()));
            t.tx(null, backup("jA", "drive0", "drive1", "speed", "x"));
            t.tx(null, backup("jA", "drive0", "drive1", "sync", "bogus"));
            t.tx(null, backup("jA", "drive0", "drive1", "x-perf", Map.of("bogus", 1)));
            t.tx(null, action("block-dirty-bitmap-add", Map.of("node", "drive0", "name", "b", "granularity", "x")));
            t.tx(null, action("block-dirty-bitmap-merge", Map.of("node", "drive0", "target", "b",
                    "bitmaps", List.of(1))));
            t.tx(null, action("blockdev-snapshot-sync", Map.of("device", "drive0", "snapshot-file",
                    t.file("snap.qcow2"), "mode", "bogus")));
            t.tx(null, action("blockdev-snapshot-internal-sync", Map.of("device", "drive0")));
            t.tx(null, action("blockdev-snapshot", Map.of("node", "drive0")));
            t.tx(null);
            t.log.add("target file created: " + Files.exists(Path.of(t.file("v.raw"))));
        });
    }

    @Test
    void abortAloneAndAfterABackupRollsBack() throws Exception {
        compare(t -> {
            t.tx(null, ABORT);
            t.tx(GROUPED, ABORT);
            t.tx(null, driveBackup(t, "jA", "drive0", "abort1.raw"), ABORT);
            t.tx(GROUPED, driveBackup(t, "jA", "drive0", "abort2.raw"), ABORT);
            t.logStatuses();
        });
    }

    @Test
    void aFailingActionRollsBackThePreparedBackups() throws Exception {
        compare(t -> {
            t.target("rbA", false);
            t.target("rbB", false);
            t.tx(null, backup("jA", "drive0", "rbA"), backup("jB", "drive1", "nosuch"));
            t.logStatuses();
            t.tx(null, backup("jA", "drive0", "rbA"), backup("jB", "drive1", "rbB", "speed", -1));
            t.tx(null, backup("jA", "drive0", "rbA"), backup("jA", "drive1", "rbB"));
            // grouped: 7.2 refuses the non-backup action in its own turn (capital T)
            t.tx(GROUPED, backup("jA", "drive0", "rbA"),
                    action("block-dirty-bitmap-add", Map.of("node", "drive0", "name", "g")));
            t.tx(GROUPED, backup("jA", "drive0", "drive0"),
                    action("block-dirty-bitmap-add", Map.of("node", "drive0", "name", "g")));
            t.tx(GROUPED, action("block-dirty-bitmap-add", Map.of("node", "drive0", "name", "g")));
            // nothing was left behind: the same backup now runs to its end
            t.tx(null, backup("jC", "drive0", "rbA"));
            t.await("J(null jC)");
        });
    }

    /**
     * transactions.md §4: every bitmap action prepared before a failing one is undone (add,
     * clear, enable/disable, merge, remove), and a successful transaction applies them all.
     * The bitmaps live on a target node, dirtied by a full backup writing it; each step logs
     * them (name, recording, count).
     */
    @Test
    void bitmapActionsAreUndoneWhenALaterActionFailsAndAppliedTogetherOtherwise() throws Exception {
        compare(t -> {
            t.target("bm", false);
            t.exec("block-dirty-bitmap-add", Map.of("node", "bm", "name", "full"));
            t.exec("block-dirty-bitmap-add", Map.of("node", "bm", "name", "empty", "disabled", true));
            t.exec("block-dirty-bitmap-add", Map.of("node", "bm", "name", "gone"));
            t.tx(null, backup("jW", "drive0", "bm"));
            t.await("J(null jW)");
            t.logBitmaps("bm");
            t.tx(null,
                    action("block-dirty-bitmap-add", Map.of("node", "bm", "name", "x")),
                    action("block-dirty-bitmap-clear", Map.of("node", "bm", "name", "full")),
                    action("block-dirty-bitmap-disable", Map.of("node", "bm", "name", "full")),
                    action("block-dirty-bitmap-enable", Map.of("node", "bm", "name", "empty")),
                    action("block-dirty-bitmap-merge", Map.of("node", "bm", "target", "empty",
                            "bitmaps", List.of("gone"))),
                    action("block-dirty-bitmap-remove", Map.of("node", "bm", "name", "gone")),
                    ABORT);
            t.logBitmaps("bm");
            // a bitmap removed by an earlier action cannot be used by a later one
            t.tx(null, action("block-dirty-bitmap-remove", Map.of("node", "bm", "name", "gone")),
                    action("block-dirty-bitmap-clear", Map.of("node", "bm", "name", "gone")));
            t.logBitmaps("bm");
            t.tx(null,
                    action("block-dirty-bitmap-add", Map.of("node", "bm", "name", "x", "disabled", true)),
                    action("block-dirty-bitmap-merge", Map.of("node", "bm", "target", "x",
                            "bitmaps", List.of("full", Map.of("node", "bm", "name", "gone")))),
                    action("block-dirty-bitmap-clear", Map.of("node", "bm", "name", "full")),
                    action("block-dirty-bitmap-remove", Map.of("node", "bm", "name", "gone")),
                    action("block-dirty-bitmap-disable", Map.of("node", "bm", "name", "empty")));
            t.logBitmaps("bm");
            t.exec("blockdev-del", Map.of("node-name", "bm"));
        });
    }

    @Test
    void twoGoodBackupsStartTogetherBeforeTheReply() throws Exception {
        compare(t -> {
            t.target("goodA", false);
            t.target("goodB", false);
            t.tx(null, backup("jA", "drive0", "goodA", "speed", 1), backup("jB", "drive1", "goodB", "speed", 1));
            t.logStatuses();
            t.exec("block-job-cancel", Map.of("device", "jA"));
            t.exec("block-job-cancel", Map.of("device", "jB"));
            t.awaitAll("J(null jA)", "J(null jB)");
        }, TransactionQemuDifferentialIT::eachJobInOrder);
    }

    @Test
    void individualCompletionLetsTheOtherJobRunWhenOneTargetFails() throws Exception {
        compare(t -> {
            t.target("indA", false);
            t.target("indB", true);
            t.tx(null, backup("jA", "drive0", "indA", "speed", 1), backup("jB", "drive1", "indB"));
            t.await("J(null jB)");
            t.logStatuses();
            t.exec("block-job-set-speed", Map.of("device", "jA", "speed", 0));
            t.await("J(null jA)");
        });
    }

    @Test
    void groupedCompletionCancelsTheOtherJobWhenOneTargetFails() throws Exception {
        compare(t -> {
            t.target("grpA", false);
            t.target("grpB", true);
            t.tx(GROUPED, backup("jA", "drive0", "grpA", "speed", 1), backup("jB", "drive1", "grpB"));
            t.await("J(null jA)");
            t.logStatuses();
        });
    }

    @Test
    void cancellingOneGroupedJobCancelsBoth() throws Exception {
        // QEMU 7.2 sometimes drains the other member while the cancel runs (an extra
        // J(paused jB) J(running jB) around the aborting events, seen in CI): pauses and
        // resumes are not compared here, the group's fate is
        compareIgnoringPausesWhileAborting(t -> {
            t.target("gcA", false);
            t.target("gcB", false);
            t.tx(GROUPED, backup("jA", "drive0", "gcA", "speed", 1), backup("jB", "drive1", "gcB", "speed", 1));
            t.exec("block-job-cancel", Map.of("device", "jA"));
            t.tx(GROUPED, backup("jA", "drive0", "gcA", "speed", 1), backup("jB", "drive1", "gcB", "speed", 1));
            t.markNow(); // the first group's ends are in the log already: wait for this group's
            t.exec("block-job-cancel", Map.of("device", "jB"));
            // QEMU 7.2 sometimes sends this group's end events only after the reply: wait for
            // them (the order of events and of replies is each compared on its own)
            t.awaitAll("J(null jA)", "J(null jB)");
            t.logStatuses();
        });
    }

    @Test
    void groupedJobsThatSucceedWaitForEachOtherAndEndNewestFirst() throws Exception {
        compare(t -> {
            t.target("gsA", false);
            t.target("gsB", false);
            t.tx(GROUPED, backup("jA", "drive0", "gsA", "speed", 1), backup("jB", "drive1", "gsB"));
            t.await("J(waiting jB)");
            t.logStatuses();
            t.exec("block-job-set-speed", Map.of("device", "jA", "speed", 0));
            t.awaitAll("J(null jA)", "J(null jB)");
        });
    }

    @Test
    void finalizingOneGroupedJobFinalizesBoth() throws Exception {
        compare(t -> {
            t.target("gfA", false);
            t.target("gfB", false);
            t.tx(GROUPED, backup("jA", "drive0", "gfA", "auto-finalize", false),
                    backup("jB", "drive1", "gfB", "speed", 1));
            t.await("J(waiting jA)");
            t.exec("block-job-set-speed", Map.of("device", "jB", "speed", 0));
            t.await("PENDING(jA)");
            t.logStatuses();
            t.exec("job-finalize", Map.of("id", "jB"));
            t.exec("job-finalize", Map.of("id", "jA"));
            t.awaitAll("J(null jA)", "J(null jB)"); // the group's ends may follow the reply
        });
    }

    @Test
    void aPausedGroupedJobResumesToBeCancelledAfterTheOther() throws Exception {
        compare(t -> {
            t.target("gpA", false);
            t.target("gpB", false);
            t.tx(GROUPED, backup("jA", "drive0", "gpA", "speed", 1), backup("jB", "drive1", "gpB", "speed", 1));
            // the transaction's own drain paused and resumed jA already: wait for the pause the
            // command asks for (QEMU 7.2 replies before its job reaches the pause point; a CI run
            // matched the drain's J(paused jA), cancelled before the real pause, and saw none)
            t.markNow();
            t.exec("block-job-pause", Map.of("device", "jA"));
            t.await("J(paused jA)");
            t.exec("block-job-cancel", Map.of("device", "jA"));
            t.exec("block-job-cancel", Map.of("device", "jB"));
            // QEMU 7.2 sometimes sends this group's end events only after the reply: wait for
            // them (the order of events and of replies is each compared on its own)
            t.awaitAll("J(null jA)", "J(null jB)");
            t.logStatuses();
        });
    }
}
