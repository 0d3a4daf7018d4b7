package jblockd.commands;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assumptions.assumeThat;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import com.fasterxml.jackson.databind.JsonNode;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QemuStorageDaemon;
import jblockd.testsupport.QmpTestClient;

/**
 * {@code auto-read-only} (what libvirt sends on every file node) on a really read-only file
 * system, a tmpfs remounted read-only (the test needs root to mount; it is skipped otherwise):
 * the file node opens, a filter-like raw node above it too, and whoever needs to write is refused
 * with the open error; without the option the open itself fails. The same exchange runs against
 * qemu-storage-daemon 7.2 when installed, and QEMU's observed texts are written out.
 */
class AutoReadOnlyQemuIT {
    @TempDir
    Path dir;
    private Path ro;
    private boolean mounted;

    @BeforeEach
    void readOnlyFileSystem() throws Exception {
        ro = Files.createDirectories(dir.resolve("ro"));
        mounted = run("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", ro.toString()) == 0;
        assumeThat(mounted).as("can mount a tmpfs (root)").isTrue();
        assertThat(run("qemu-img", "create", "-q", "-f", "raw", ro.resolve("a.raw").toString(), "1M")).isZero();
        assertThat(run("qemu-img", "create", "-q", "-f", "qcow2", ro.resolve("b.qcow2").toString(), "1M")).isZero();
        assertThat(run("mount", "-o", "remount,ro", ro.toString())).isZero();
    }

    /** The daemons first (they hold the images open), then the mount, then JUnit's temp dir. */
    @AfterEach
    void stopDaemonsAndUnmount() throws Exception {
        for (AutoCloseable c : closeLater) {
            c.close();
        }
        if (mounted) {
            assertThat(run("umount", ro.toString())).as("umount").isZero();
        }
    }

    @Test
    void writersAreRefusedWithTheOpenErrorAndReadersWork() throws Exception {
        String a = ro.resolve("a.raw").toString();
        String b = ro.resolve("b.qcow2").toString();
        String refusedA = "Could not open '" + a + "': Read-only file system";
        String refusedB = "Could not open '" + b + "': Read-only file system";
        List<String> expected = List.of("ok", refusedA, "ok", "ro=false", "ok", refusedA, "ok", refusedB, "ok");
        assertThat(exchange(jblockd())).as("jblockd").containsExactlyElementsOf(expected);
        if (onPath("qemu-storage-daemon")) {
            assertThat(exchange(qsd())).as("QEMU").containsExactlyElementsOf(expected);
        }
    }

    private List<String> exchange(QmpTestClient c) throws Exception {
        String a = ro.resolve("a.raw").toString();
        String b = ro.resolve("b.qcow2").toString();
        List<String> out = new ArrayList<>();
        try (c) {
            out.add(result(c, "blockdev-add", QmpTestClient.json("{\"driver\":\"file\",\"node-name\":\"f1\","
                    + "\"filename\":\"" + a + "\",\"auto-read-only\":true}")));
            out.add(result(c, "blockdev-add", QmpTestClient.json("{\"driver\":\"file\",\"node-name\":\"f2\","
                    + "\"filename\":\"" + a + "\"}")));
            out.add(result(c, "blockdev-add", QmpTestClient.json("{\"driver\":\"raw\",\"node-name\":\"r1\","
                    + "\"file\":\"f1\"}")));
            JsonNode nodes = c.executeOk("query-named-block-nodes", Map.of("flat", true));
            for (JsonNode n : nodes) {
                if (n.get("node-name").asText().equals("f1")) {
                    out.add("ro=" + n.get("ro").asBoolean());
                }
            }
            out.add(result(c, "nbd-server-start", QmpTestClient.json("{\"addr\":{\"type\":\"unix\",\"data\":"
                    + "{\"path\":\"" + dir.resolve("nbd-" + System.identityHashCode(c) + ".sock") + "\"}}}")));
            out.add(result(c, "block-export-add", Map.of("type", "nbd", "id", "e", "node-name", "r1",
                    "writable", true)));
            out.add(result(c, "block-export-add", Map.of("type", "nbd", "id", "e2", "node-name", "r1")));
            out.add(result(c, "blockdev-add", QmpTestClient.json("{\"driver\":\"qcow2\",\"node-name\":\"q1\","
                    + "\"auto-read-only\":true,\"file\":{\"driver\":\"file\",\"filename\":\"" + b + "\"}}")));
            out.add(result(c, "blockdev-add", QmpTestClient.json("{\"driver\":\"qcow2\",\"node-name\":\"q2\","
                    + "\"read-only\":true,\"auto-read-only\":true,\"file\":{\"driver\":\"file\",\"filename\":\""
                    + b + "\"}}")));
        }
        return out;
    }

    private static String result(QmpTestClient c, String command, Object args) throws IOException {
        JsonNode r = c.execute(command, args);
        return r.has("error") ? r.get("error").get("desc").asText() : "ok";
    }

    private QmpTestClient jblockd() throws Exception {
        DaemonProcess d = DaemonProcess.start(Files.createDirectories(dir.resolve("jd")));
        closeLater.add(d);
        return d.connect();
    }

    private final List<AutoCloseable> closeLater = new ArrayList<>();

    private QmpTestClient qsd() throws Exception {
        QemuStorageDaemon p = QemuStorageDaemon.start(dir.resolve("qsd"));
        closeLater.add(p);
        return p.connect();
    }

    private static int run(String... cmd) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        p.getInputStream().readAllBytes();
        return p.waitFor();
    }

    private static boolean onPath(String tool) {
        for (String p : System.getenv("PATH").split(":")) {
            if (Files.isExecutable(Path.of(p, tool))) {
                return true;
            }
        }
        return false;
    }
}
