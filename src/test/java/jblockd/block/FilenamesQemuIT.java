package jblockd.block;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QemuStorageDaemon;
import jblockd.testsupport.QmpTestClient;

/**
 * Filename strings side by side with qemu-storage-daemon 7.2: qcow2 images made by qemu-img
 * whose backing names are {@code json:{...}}, {@code blkdebug:CONF:IMG} and relative names
 * (resolved against the overlay's directory, not the daemon's cwd), and drive-backup targets
 * given as protocol strings; the same replies and error texts on both.
 */
class FilenamesQemuIT {
    @TempDir
    Path tmp;

    private static boolean have(String tool) {
        try {
            return new ProcessBuilder(tool, "--version").redirectErrorStream(true).start().waitFor() == 0;
        } catch (IOException | InterruptedException e) {
            return false;
        }
    }

    private static void run(String... cmd) throws Exception {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        assertThat(p.waitFor(30, TimeUnit.SECONDS)).isTrue();
        assertThat(p.exitValue()).as(String.join(" ", cmd) + ": " + out).isZero();
    }

    private static JsonNode args(String json) {
        return QmpTestClient.json(json);
    }

    /** The reply without values that differ per peer by nature. */
    private static String shape(JsonNode reply) {
        return reply.has("error") ? "error: " + reply.get("error").get("desc").asText() : "ok";
    }

    private List<String> sequence(QmpTestClient c, Path d) throws IOException {
        List<String> out = new ArrayList<>();
        for (String name : List.of("json", "blkdebug", "rel", "fileprefix", "badproto", "missing")) {
            out.add(name + " " + shape(c.execute("blockdev-add", args("{\"driver\":\"qcow2\",\"node-name\":\"n-"
                    + name + "\",\"file\":{\"driver\":\"file\",\"filename\":\"" + d.resolve("sub/" + name + ".qcow2")
                    + "\"}}"))));
        }
        // the backing chain as opened: driver per level
        for (String name : List.of("json", "blkdebug", "rel", "fileprefix")) {
            JsonNode nodes = c.executeOk("query-named-block-nodes", Map.of("flat", false));
            for (JsonNode n : nodes) {
                if (n.get("node-name").asText().equals("n-" + name)) {
                    List<String> drivers = new ArrayList<>();
                    for (JsonNode img = n.get("image"); img != null; img = img.get("backing-image")) {
                        drivers.add(img.get("format").asText() + ":" + img.get("virtual-size").asLong());
                    }
                    out.add(name + " chain " + drivers + " backing " + n.get("image").get("backing-filename"));
                }
            }
        }
        for (String target : List.of("foo:bar.raw", "json:[1]", "json:{bad", "null-co://x",
                "blkdebug:" + d.resolve("tgt.raw"), "blkdebug:" + d.resolve("none.cfg") + ":" + d.resolve("tgt.raw"),
                "blkdebug::" + d.resolve("tgt.raw"), "file:" + d.resolve("tgt.raw"),
                "json:{\"driver\":\"null-co\",\"size\":1048576}", d.resolve("nosuch.raw").toString())) {
            String r = shape(c.execute("drive-backup", Map.of("device", "n-rel", "target", target, "sync", "full",
                    "mode", "existing", "format", "raw", "job-id", "j")));
            out.add("backup " + target.replace(d.toString(), "D") + " " + r.replace(d.toString(), "D"));
            if (r.equals("ok")) {
                c.waitEvent("JOB_STATUS_CHANGE", e -> e.at("/data/status").asText().equals("null"),
                        java.time.Duration.ofSeconds(20));
            }
        }
        out.add("absolute-paths blkdebug " + shape(c.execute("drive-backup", Map.of("device", "n-rel", "target",
                "blkdebug::" + d.resolve("new.raw"), "sync", "full", "format", "raw"))));
        out.replaceAll(line -> line.replace(d.toString(), "D"));
        return out;
    }

    private void images(Path d) throws Exception {
        Path sub = Files.createDirectories(d.resolve("sub"));
        run("qemu-img", "create", "-q", "-f", "raw", d.resolve("base.raw").toString(), "1M");
        run("qemu-img", "create", "-q", "-f", "qcow2", d.resolve("base.qcow2").toString(), "2M");
        run("qemu-img", "create", "-q", "-f", "raw", d.resolve("tgt.raw").toString(), "2M");
        Files.writeString(d.resolve("bd.cfg"), "[inject-error]\nevent = \"flush_to_disk\"\nerrno = \"5\"\n");
        run("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b",
                "json:{\"driver\":\"raw\",\"file.driver\":\"file\",\"file.filename\":\"" + d.resolve("base.raw") + "\"}",
                sub.resolve("json.qcow2").toString(), "1M");
        run("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "qcow2", "-b",
                "blkdebug:" + d.resolve("bd.cfg") + ":" + d.resolve("base.qcow2"), sub.resolve("blkdebug.qcow2").toString(),
                "2M");
        run("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "qcow2", "-b", "../base.qcow2",
                sub.resolve("rel.qcow2").toString(), "2M");
        run("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "qcow2", "-b", "file:" + d.resolve("base.qcow2"),
                sub.resolve("fileprefix.qcow2").toString(), "2M");
        run("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", "foo:bar",
                sub.resolve("badproto.qcow2").toString(), "2M");
        run("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", "nothere.raw",
                sub.resolve("missing.qcow2").toString(), "2M");
    }

    @Test
    void backingNamesAndTargetsAsQemu() throws Exception {
        assumeTrue(have("qemu-storage-daemon") && have("qemu-img"), "QEMU 7.2 tools not installed");
        Path dq = Files.createDirectories(tmp.resolve("qsd"));
        Path dj = Files.createDirectories(tmp.resolve("jb"));
        images(dq);
        images(dj);
        List<String> qemu;
        QemuStorageDaemon q = QemuStorageDaemon.start(dq.resolve("run"));
        try (QmpTestClient c = q.connect()) {
            qemu = sequence(c, dq);
        } finally {
            q.close();
        }
        List<String> ours;
        try (DaemonProcess p = DaemonProcess.start(Files.createDirectories(dj.resolve("run")));
             QmpTestClient c = p.connect()) {
            ours = sequence(c, dj);
        }
        assertThat(String.join("\n", ours)).isEqualTo(String.join("\n", qemu));
    }
}
