package jblockd.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import jblockd.client.QmpClient;
import jblockd.client.QmpPeer;
import jblockd.client.TestTools;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * jblockctl driven as a process, as a user would, against a QMP peer with a raw {@code drive0}
 * (jblockd or QEMU 7.2). Asserts on output, parsed JSON, exit codes and the images themselves.
 */
abstract class JblockCtlContract {
    static final long IMAGE_SIZE = 8L << 20;
    static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    Path dir;
    Path image;
    QmpPeer peer;

    abstract QmpPeer startPeer(Path dir, Path image) throws Exception;

    @BeforeEach
    void start() throws Exception {
        image = TestTools.patternedRaw(dir.resolve("source.img"), IMAGE_SIZE);
        peer = startPeer(dir, image);
    }

    @AfterEach
    void stop() {
        if (peer != null) {
            peer.close();
        }
    }

    CliRunner.Result ctl(String... args) throws Exception {
        List<String> all = new ArrayList<>(List.of("--socket", peer.socket().toString()));
        all.addAll(List.of(args));
        try {
            return CliRunner.run(all.toArray(String[]::new));
        } catch (AssertionError hung) {
            // what the peer says about its jobs at that moment, for the CI log
            throw new AssertionError(hung.getMessage() + "\npeer's jobs: " + quick("jobs").out(), hung);
        }
    }

    /**
     * The same, in this JVM ({@link JblockCtl#run}): for the many short follow-up commands of a
     * scenario, where a JVM start each would only cost time. Each scenario's main command runs
     * as a process.
     */
    CliRunner.Result quick(String... args) {
        java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream();
        java.io.ByteArrayOutputStream err = new java.io.ByteArrayOutputStream();
        List<String> all = new ArrayList<>(List.of("--socket", peer.socket().toString()));
        all.addAll(List.of(args));
        int rc = JblockCtl.run(all.toArray(String[]::new), new java.io.PrintStream(out, true, StandardCharsets.UTF_8),
                new java.io.PrintStream(err, true, StandardCharsets.UTF_8));
        return new CliRunner.Result(rc, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
    }

    @Test
    void infoShowsRunStateAndDevicesAsTablesAndJson() throws Exception {
        assumeTrue(peer.supports("query-status"), "the peer has no query-status yet");
        assumeTrue(peer.supports("query-block-jobs"), "the peer has no query-block-jobs yet");
        CliRunner.Result r = ctl("info");
        assertThat(r.code()).isZero();
        assertThat(r.out()).contains("Run state: running").contains("Devices:").contains("DEVICE")
                .containsPattern("drive0 .* raw +8\\.0 MiB").contains(image.toString());
        CliRunner.Result j = quick("info", "--json");
        assertThat(j.code()).isZero();
        JsonNode o = JSON.readTree(j.out());
        assertThat(o.path("status").path("status").asText()).isEqualTo("running");
        assertThat(o.path("devices").get(0).path("device").asText()).isEqualTo("drive0");
        assertThat(o.path("jobs").isArray()).isTrue();
    }

    @Test
    void backupWithJsonPrintsProgressObjectsAndAFinalResult() throws Exception {
        assumeTrue(peer.supports("drive-backup"), "the peer has no drive-backup yet");
        Path target = dir.resolve("backup.img");
        CliRunner.Result r = ctl("backup", "drive0", target.toString(), "--format", "raw", "--speed", "4M", "--json");
        assertThat(r.code()).as(r.err()).isZero();
        List<JsonNode> lines = new ArrayList<>();
        for (String l : r.outLines()) {
            lines.add(JSON.readTree(l));
        }
        List<Long> offsets = lines.stream().filter(n -> n.path("kind").asText().equals("progress"))
                .map(n -> n.path("offset").asLong()).toList();
        assertThat(offsets).isSorted();
        assertThat(offsets.stream().distinct().count()).isGreaterThanOrEqualTo(3);
        assertThat(lines.stream().anyMatch(n -> n.path("speed").asLong() == 4L << 20)).isTrue();
        JsonNode last = lines.get(lines.size() - 1);
        assertThat(last.path("kind").asText()).isEqualTo("result");
        assertThat(last.path("outcome").asText()).isEqualTo("completed");
        assertThat(last.path("offset").asLong()).isEqualTo(IMAGE_SIZE);
        assertThat(TestTools.qemuImgCompare(image, target)).isZero();
    }

    @Test
    void backupWhenPipedPrintsPlainLinesAndTheResult() throws Exception {
        assumeTrue(peer.supports("drive-backup"), "the peer has no drive-backup yet");
        Path target = dir.resolve("backup.img");
        CliRunner.Result r = ctl("backup", "drive0", target.toString(), "--format", "raw");
        assertThat(r.code()).isZero();
        assertThat(r.out()).doesNotContain("\u001b[").contains("drive0: backup completed, 8.0 MiB in");
        assertThat(TestTools.qemuImgCompare(image, target)).isZero();
    }

    @Test
    void daemonErrorsAreOneLineWithExitCodeOne() throws Exception {
        assumeTrue(peer.supports("drive-backup"), "the peer has no drive-backup yet");
        CliRunner.Result r = ctl("backup", "nosuch", dir.resolve("x.img").toString());
        assertThat(r.code()).isEqualTo(1);
        assertThat(r.err().strip().lines().count()).isEqualTo(1);
        assertThat(r.err()).startsWith("jblockctl: ").contains("nosuch");
        assertThat(r.err()).matches("jblockctl: (GenericError|DeviceNotFound): .*\\R");
        CliRunner.Result p = quick("pause", "nosuch");
        assertThat(p.code()).isEqualTo(1);
        assertThat(p.err()).isEqualTo("jblockctl: DeviceNotActive: Block job 'nosuch' not found\n");
    }

    @Test
    void bitmapSubcommandsAddListMergeClearAndRemove() throws Exception {
        assumeTrue(peer.supports("block-dirty-bitmap-add"), "the peer has no dirty bitmaps yet");
        CliRunner.Result add = ctl("bitmap", "add", "drive0", "b0");
        assertThat(add.code()).as(add.err()).isZero();
        assertThat(add.out()).isEqualTo("drive0: bitmap 'b0' added\n");
        assertThat(quick("bitmap", "add", "drive0", "b1", "--granularity", "512", "--disabled").code()).isZero();
        CliRunner.Result list = quick("bitmap", "list", "drive0");
        assertThat(list.code()).as(list.err()).isZero();
        assertThat(list.outLines()).hasSize(3);
        assertThat(list.outLines().get(0)).matches("NODE +NAME +GRANULARITY +DIRTY +FLAGS");
        assertThat(list.outLines().get(1)).matches("drive0 +b1 +512 B +0 B +disabled");
        assertThat(list.outLines().get(2)).matches("drive0 +b0 +64\\.0 KiB +0 B +recording");
        CliRunner.Result all = quick("bitmap", "list");
        assertThat(all.out()).contains(" b1 ").contains(" b0 ");

        assertThat(quick("bitmap", "merge", "drive0", "b1", "b0", "drive0:b0").out())
                .isEqualTo("drive0: bitmap 'b1' merged from b0, drive0:b0\n");
        assertThat(quick("bitmap", "enable", "drive0", "b1").out()).isEqualTo("drive0: bitmap 'b1' enabled\n");
        assertThat(quick("bitmap", "disable", "drive0", "b0").out()).isEqualTo("drive0: bitmap 'b0' disabled\n");
        assertThat(quick("bitmap", "clear", "drive0", "b0", "--json").out())
                .isEqualTo("{\"kind\":\"done\",\"command\":\"block-dirty-bitmap-clear\",\"node\":\"drive0\",\"name\":\"b0\"}\n");
        JsonNode json = JSON.readTree(quick("bitmap", "list", "drive0", "--json").out());
        assertThat(json.size()).isEqualTo(2);
        assertThat(json.get(0).path("name").asText()).isEqualTo("b1");
        assertThat(json.get(0).path("recording").asBoolean()).isTrue();
        assertThat(json.get(1).path("granularity").asLong()).isEqualTo(65536);
        assertThat(json.get(1).path("recording").asBoolean()).isFalse();

        CliRunner.Result missing = quick("bitmap", "remove", "drive0", "nob");
        assertThat(missing.code()).isEqualTo(1);
        assertThat(missing.err()).isEqualTo("jblockctl: GenericError: Dirty bitmap 'nob' not found\n");
        assertThat(quick("bitmap", "add", "drive0", "b2", "--granularity", "3000").err())
                .isEqualTo("jblockctl: GenericError: Granularity must be power of 2 and at least 512\n");
        assertThat(quick("bitmap", "list", "nosuch").code()).isEqualTo(1);
        assertThat(quick("bitmap").code()).isEqualTo(2);
        assertThat(quick("bitmap", "merge", "drive0", "b1").code()).as("no source").isEqualTo(2);
        assertThat(quick("bitmap", "remove", "drive0", "b0").out()).isEqualTo("drive0: bitmap 'b0' removed\n");
        assertThat(quick("bitmap", "remove", "drive0", "b1").code()).isZero();
        assertThat(quick("bitmap", "list").out()).isEqualTo("no dirty bitmaps\n");
    }

    @Test
    void usageAndConnectionErrorsExitTwo() throws Exception {
        assumeTrue(peer.supports("query-block-jobs"), "the peer has no query-block-jobs yet");
        CliRunner.Result badSpeed = ctl("backup", "drive0", dir.resolve("x.img").toString(), "--speed", "fast");
        assertThat(badSpeed.code()).isEqualTo(2);
        assertThat(badSpeed.err()).contains("invalid size 'fast'");
        CliRunner.Result noSocket = CliRunner.run("jobs");
        assertThat(noSocket.code()).isEqualTo(2);
        assertThat(noSocket.err()).startsWith("jblockctl: no QMP socket");
        CliRunner.Result missing = CliRunner.run("--socket", dir.resolve("nope.sock").toString(), "info");
        assertThat(missing.code()).isEqualTo(2);
        assertThat(missing.err()).startsWith("jblockctl: cannot connect to ");
        assertThat(CliRunner.run("frobnicate").code()).isEqualTo(2);
        CliRunner.Result help = quick("backup", "--help");
        assertThat(help.code()).isZero();
        assertThat(help.out()).startsWith("Point-in-time backup").contains("Usage: jblockctl backup [OPTIONS] DEVICE TARGET");
        CliRunner.Result env = CliRunner.run(Map.of(JblockCtl.SOCKET_ENV, peer.socket().toString()), null, "jobs");
        assertThat(env.code()).isZero();
        assertThat(env.out()).isEqualTo("no block jobs\n");
    }

    @Test
    void detachedJobIsPausedSpedUpWatchedAndCancelled() throws Exception {
        assumeTrue(peer.supports("drive-backup"), "the peer has no drive-backup yet");
        Path target = dir.resolve("slow.img");
        CliRunner.Result start = ctl("backup", "drive0", target.toString(), "--format", "raw", "--speed", "512K",
                "--detach");
        assertThat(start.code()).isZero();
        assertThat(start.out()).isEqualTo("drive0: started\n");

        assertThat(quick("pause", "drive0").code()).isZero();
        JsonNode jobs = JSON.readTree(quick("jobs", "--json").out());
        assertThat(jobs.get(0).path("device").asText()).isEqualTo("drive0");
        assertThat(quick("set-speed", "drive0", "1M").code()).isZero();
        CliRunner.Result table = quick("jobs");
        assertThat(table.out()).contains("ID").containsPattern("drive0 +backup +(paused|running)")
                .contains("1.0 MiB/s");
        assertThat(quick("resume", "drive0").code()).isZero();

        // watch from a second client while this one cancels
        Process watch = CliRunner.start(Map.of(), "--socket", peer.secondSocket().toString(), "watch", "drive0");
        CompletableFuture<String> watchOut = CliRunner.drain(watch.getInputStream());
        CompletableFuture<String> watchErr = CliRunner.drain(watch.getErrorStream());
        Thread.sleep(1500); // let it attach
        CliRunner.Result cancel = ctl("cancel", "drive0");
        assertThat(cancel.code()).as(cancel.err()).isZero();
        assertThat(cancel.out()).contains("drive0: backup cancelled at");
        CliRunner.Result watched = CliRunner.finish(watch, watchOut, watchErr, 30);
        assertThat(watched.code()).as(watched.err()).isEqualTo(1);
        assertThat(watched.out()).contains("drive0: backup cancelled at");
        assertThat(quick("jobs").out()).isEqualTo("no block jobs\n");
    }

    @Test
    void manualFinalizeAndDismiss() throws Exception {
        assumeTrue(peer.supports("drive-backup"), "the peer has no drive-backup yet");
        Path target = dir.resolve("manual.img");
        CliRunner.Result r = ctl("backup", "drive0", target.toString(), "--format", "raw", "--no-auto-finalize",
                "--no-auto-dismiss");
        assertThat(r.code()).as(r.err()).isZero();
        assertThat(r.out()).contains("drive0: pending: 'jblockctl finalize drive0'");
        assertThat(quick("jobs").out()).containsPattern("drive0 +backup +pending");
        CliRunner.Result f = quick("finalize", "drive0");
        assertThat(f.code()).as(f.err()).isZero();
        assertThat(f.out()).isEqualTo("drive0: block-job-finalize accepted\n");
        assertThat(quick("jobs").out()).containsPattern("drive0 +backup +concluded +100.0%");
        assertThat(quick("dismiss", "drive0").code()).isZero();
        assertThat(quick("jobs").out()).isEqualTo("no block jobs\n");
        CliRunner.Result again = quick("dismiss", "drive0");
        assertThat(again.code()).isEqualTo(1);
        assertThat(again.err()).isEqualTo("jblockctl: DeviceNotActive: Block job 'drive0' not found\n");
        assertThat(TestTools.qemuImgCompare(image, target)).isZero();
    }

    @Test
    void eventsFollowPrintsEventsAsJsonLines() throws Exception {
        assumeTrue(peer.supports("stop"), "the peer has no stop yet");
        Process ev = CliRunner.start(Map.of(), "--socket", peer.secondSocket().toString(), "events", "--json",
                "--event", "STOP", "--event", "RESUME", "-n", "2");
        CompletableFuture<String> out = CliRunner.drain(ev.getInputStream());
        CompletableFuture<String> err = CliRunner.drain(ev.getErrorStream());
        try (QmpClient qmp = QmpClient.connectUnix(peer.socket())) {
            // the follower's subscription time is unknown: toggle until it has seen two events
            long deadline = System.nanoTime() + 20_000_000_000L;
            while (ev.isAlive() && System.nanoTime() < deadline) {
                qmp.stop();
                qmp.cont();
                Thread.sleep(200);
            }
        }
        CliRunner.Result r = CliRunner.finish(ev, out, err, 10);
        assertThat(r.code()).as(r.err()).isZero();
        List<String> names = new ArrayList<>();
        for (String l : r.outLines()) {
            JsonNode n = JSON.readTree(l);
            names.add(n.path("event").asText());
            assertThat(n.path("timestamp").path("seconds").asLong()).isPositive();
        }
        assertThat(names).hasSize(2).containsAnyOf("STOP", "RESUME");
    }

    @Test
    void qmpPassthroughPrintsTheReply() throws Exception {
        assumeTrue(peer.supports("query-status"), "the peer has no query-status yet");
        assumeTrue(peer.supports("block-job-set-speed"), "the peer has no block-job-set-speed yet");
        CliRunner.Result r = ctl("qmp", "{\"execute\":\"query-status\"}");
        assertThat(r.code()).isZero();
        assertThat(JSON.readTree(r.out()).path("return").path("status").asText()).isEqualTo("running");
        CliRunner.Result shell = quick("qmp", "query-block");
        assertThat(JSON.readTree(shell.out()).path("return").get(0).path("device").asText()).isEqualTo("drive0");
        CliRunner.Result bad = ctl("qmp", "{'execute': 'no-such-command'}");
        assertThat(bad.code()).isEqualTo(1);
        assertThat(JSON.readTree(bad.out()).path("error").path("class").asText()).isEqualTo("CommandNotFound");
        assertThat(bad.err()).startsWith("jblockctl: CommandNotFound: ");
        CliRunner.Result args = quick("qmp", "block-job-set-speed", "device=nosuch", "speed=1");
        assertThat(JSON.readTree(args.out()).path("error").path("desc").asText())
                .isEqualTo("Block job 'nosuch' not found");
    }

    @Test
    void shellRunsCommandsListsNamesAndKeepsHistory() throws Exception {
        assumeTrue(peer.supports("query-status"), "the peer has no query-status yet");
        Path history = dir.resolve("history");
        String input = String.join("\n", "query-status", "help query-block", "query-named?", "!1",
                "{\"execute\": \"query-version\"}", "history", "bogus-cmd", "exit", "");
        CliRunner.Result r = CliRunner.run(Map.of(ShellCommand.HISTORY_ENV, history.toString()), input,
                "--socket", peer.socket().toString(), "shell");
        assertThat(r.code()).as(r.err()).isZero();
        List<String> out = r.outLines();
        assertThat(out.get(0)).contains("\"status\":\"running\"");
        assertThat(String.join("\n", out)).contains("query-block-jobs").contains("query-block-exports")
                .contains("query-named-block-nodes").contains("\"major\":7")
                .contains("CommandNotFound");
        assertThat(out.stream().filter(l -> l.contains("\"status\":\"running\"")).count()).isEqualTo(2);
        assertThat(Files.readAllLines(history, StandardCharsets.UTF_8))
                .containsSubsequence("query-status", "help query-block", "query-named?", "history");
    }

    @Test
    void shellOnATerminalCompletesCommandNamesAndRecallsHistory() throws Exception {
        assumeTrue(TestTools.onPath("script") && TestTools.onPath("stty"), "script(1)/stty not installed");
        String cmd = String.join(" ", CliRunner.command(List.of("--socket", peer.socket().toString(), "shell")));
        // keys as typed, with pauses so the shell is reading when they arrive: Tab completes
        // "query-vers" (unique), Up recalls it, Ctrl-U clears a line, a Tab on "query-" lists names
        String keys = "sleep 3; printf 'query-vers\\t\\n'; sleep 1; printf '\\033[A\\n'; sleep 1;"
                + " printf 'query-\\t'; sleep 1; printf '\\025exit\\n'; sleep 1";
        StringBuilder out = new StringBuilder();
        int rc = TestTools.run(List.of("sh", "-c", "(" + keys + ") | JBLOCKCTL_HISTORY=" + dir.resolve("h")
                + " script -qfec '" + cmd + "' /dev/null"), out);
        String tty = out.toString();
        assertThat(rc).as(tty).isZero();
        assertThat(tty).contains("(jblockd) query-version \u001b[K");
        assertThat(tty.split("\"major\":7", -1)).as(tty).hasSize(3); // the command ran twice
        assertThat(tty).contains("query-block  ").contains("query-named-block-nodes");
        assertThat(Files.readAllLines(dir.resolve("h"))).containsExactly("query-version");
    }

    @Test
    void progressBarRedrawsInPlaceOnATerminal() throws Exception {
        assumeTrue(peer.supports("drive-backup"), "the peer has no drive-backup yet");
        assumeTrue(TestTools.onPath("script"), "script(1) not installed");
        Path target = dir.resolve("tty.img");
        String cmd = String.join(" ", CliRunner.command(List.of("--socket", peer.socket().toString(), "backup",
                "drive0", target.toString(), "--format", "raw", "--speed", "4M")));
        StringBuilder out = new StringBuilder();
        int rc = TestTools.run(List.of("script", "-qfec", cmd, "/dev/null"), out);
        assertThat(rc).as(out.toString()).isZero();
        String tty = out.toString();
        assertThat(tty).contains("\u001b[1A").contains("\r").contains("\u001b[K");
        List<Double> pcts = new ArrayList<>();
        Matcher m = Pattern.compile("\\] +([0-9.]+)%").matcher(tty);
        while (m.find()) {
            pcts.add(Double.parseDouble(m.group(1)));
        }
        assertThat(pcts).isSorted();
        assertThat(pcts.stream().distinct().count()).isGreaterThanOrEqualTo(3);
        assertThat(pcts.get(pcts.size() - 1)).isEqualTo(100.0);
        assertThat(tty).contains("[########################] 100.0%").contains("drive0: backup completed");
        assertThat(TestTools.qemuImgCompare(image, target)).isZero();
    }

    @Test
    void mirrorReturnsAtReadyAndCompletePivots() throws Exception {
        assumeTrue(peer.supports("drive-mirror"), "the peer has no drive-mirror yet");
        Path target = dir.resolve("mirror.img");
        CliRunner.Result m = ctl("mirror", "drive0", target.toString(), "--format", "raw");
        assertThat(m.code()).as(m.err()).isZero();
        assertThat(m.out()).contains("drive0: ready");
        assertThat(quick("jobs").out()).containsPattern("drive0 +mirror +ready");
        CliRunner.Result c = ctl("complete", "drive0");
        assertThat(c.code()).as(c.err()).isZero();
        assertThat(c.out()).contains("drive0: mirror completed");
        assertThat(quick("info").out()).containsPattern("drive0 .*" + Pattern.quote(target.toString()));
        assertThat(TestTools.qemuImgCompare(image, target)).isZero();
    }
}
