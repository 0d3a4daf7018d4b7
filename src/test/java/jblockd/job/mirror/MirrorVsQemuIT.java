package jblockd.job.mirror;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/**
 * The same mirror scenarios against QEMU 7.2 ({@code qemu-system-x86_64 -M none}, an
 * {@code if=none} drive) and against jblockd: the replies, the event sequence (names and
 * JOB_STATUS_CHANGE statuses in order) and the member names of events and query-block-jobs must
 * be the same.
 */
class MirrorVsQemuIT {
    private static final Duration T = Duration.ofSeconds(30);

    @TempDir
    Path dir;

    @BeforeEach
    void tools() {
        Tools.assumeTools("qemu-system-x86_64", "qemu-img", "qemu-io");
    }

    /** What one scenario showed: events as NAME or J(status), and the shapes seen. */
    record Trace(List<String> events, List<String> jobMembers, List<String> readyMembers,
                 List<String> completedMembers, String readyJobStatus, boolean readyFlag, String fileAfter) {
    }

    private interface Peer extends AutoCloseable {
        QmpTestClient client();

        @Override
        void close();
    }

    private Peer qemu(Path src) throws IOException {
        Path sock = dir.resolve("qemu-" + System.nanoTime() + ".sock");
        Process p = new ProcessBuilder("qemu-system-x86_64", "-M", "none", "-nodefaults", "-display", "none",
                "-qmp", "unix:" + sock + ",server=on,wait=off",
                "-drive", "if=none,id=drive0,file=" + src + ",format=raw")
                .redirectErrorStream(true).redirectOutput(dir.resolve("qemu.log").toFile()).start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (!Files.exists(sock) && System.nanoTime() < deadline) {
            try {
                Thread.sleep(20);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        QmpTestClient c = QmpTestClient.connectUnix(sock);
        return new Peer() {
            public QmpTestClient client() {
                return c;
            }

            public void close() {
                c.close();
                p.destroy();
                try {
                    p.waitFor(10, TimeUnit.SECONDS);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
                p.destroyForcibly();
            }
        };
    }

    private Peer jblockd(Path src) throws IOException {
        Path sub = dir.resolve("jb-" + System.nanoTime());
        try {
            Files.createDirectories(sub);
        } catch (IOException e) {
            throw e;
        }
        DaemonProcess d = DaemonProcess.start(sub, "--drive", "id=drive0,file=" + src + ",format=raw");
        QmpTestClient c = d.connect();
        return new Peer() {
            public QmpTestClient client() {
                return c;
            }

            public void close() {
                c.close();
                d.close();
            }
        };
    }

    private static String show(JsonNode e) {
        String name = e.path("event").asText();
        return name.equals("JOB_STATUS_CHANGE") ? "J(" + e.path("data").path("status").asText() + ")" : name;
    }

    private static List<String> untilNull(QmpTestClient c, List<String> out, List<JsonNode> raw) throws Exception {
        while (true) {
            JsonNode e = c.events().poll(T.toSeconds(), TimeUnit.SECONDS);
            assertThat(e).as("events so far " + out).isNotNull();
            out.add(show(e));
            raw.add(e);
            if (show(e).equals("J(null)")) {
                return out;
            }
        }
    }

    /** drive-mirror sync=full, READY, then complete (or cancel when {@code cancel}). */
    private Trace scenario(Peer peer, Path tgt, boolean cancel) throws Exception {
        QmpTestClient c = peer.client();
        List<String> ev = new ArrayList<>();
        List<JsonNode> raw = new ArrayList<>();
        c.executeOk("drive-mirror", Map.of("device", "drive0", "target", tgt.toString(), "sync", "full",
                "format", "raw", "mode", "absolute-paths"));
        JsonNode ready;
        while (true) {
            JsonNode e = c.events().poll(T.toSeconds(), TimeUnit.SECONDS);
            assertThat(e).as("events so far " + ev).isNotNull();
            ev.add(show(e));
            if (e.path("event").asText().equals("BLOCK_JOB_READY")) {
                ready = e;
                break;
            }
        }
        JsonNode job = c.executeOk("query-block-jobs").get(0);
        c.executeOk(cancel ? "block-job-cancel" : "block-job-complete", Map.of("device", "drive0"));
        ev.add("<" + (cancel ? "cancel" : "complete") + ">");
        untilNull(c, ev, raw);
        JsonNode completed = raw.stream().filter(e -> e.path("event").asText().equals("BLOCK_JOB_COMPLETED"))
                .findFirst().orElseThrow();
        String file = c.executeOk("query-block").get(0).path("inserted").path("file").asText();
        return new Trace(ev, QmpTestClient.memberNames(job), QmpTestClient.memberNames(ready.path("data")),
                QmpTestClient.memberNames(completed.path("data")), job.path("status").asText(),
                job.path("ready").asBoolean(), file.equals(tgt.toString()) ? "target" : "source");
    }

    private Path source(String name) throws Exception {
        Path src = dir.resolve(name);
        Tools.ok("qemu-img", "create", "-q", "-f", "raw", src.toString(), "8M");
        Tools.write(src, "raw", 0x5a, 1 << 20, 2 << 20);
        return src;
    }

    @Test
    void completeScenarioMatchesQemu() throws Exception {
        Trace q;
        Trace j;
        try (Peer p = qemu(source("q.raw"))) {
            q = scenario(p, dir.resolve("q-tgt.raw"), false);
        }
        try (Peer p = jblockd(source("j.raw"))) {
            j = scenario(p, dir.resolve("j-tgt.raw"), false);
        }
        assertThat(j.events()).isEqualTo(q.events());
        assertThat(j.jobMembers()).isEqualTo(q.jobMembers());
        assertThat(j.readyMembers()).isEqualTo(q.readyMembers());
        assertThat(j.completedMembers()).isEqualTo(q.completedMembers());
        assertThat(j.readyJobStatus()).isEqualTo(q.readyJobStatus());
        assertThat(j.readyFlag()).isEqualTo(q.readyFlag());
        assertThat(j.fileAfter()).isEqualTo(q.fileAfter()).isEqualTo("target");
    }

    @Test
    void cancelAfterReadyScenarioMatchesQemu() throws Exception {
        Trace q;
        Trace j;
        try (Peer p = qemu(source("q.raw"))) {
            q = scenario(p, dir.resolve("q-tgt.raw"), true);
        }
        try (Peer p = jblockd(source("j.raw"))) {
            j = scenario(p, dir.resolve("j-tgt.raw"), true);
        }
        assertThat(j.events()).isEqualTo(q.events());
        assertThat(j.completedMembers()).isEqualTo(q.completedMembers());
        assertThat(j.fileAfter()).isEqualTo(q.fileAfter()).isEqualTo("source");
    }
}
