package jblockd.job.mirror;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/**
 * block-stream and block-commit through the real daemon process on qcow2 chains built with
 * qemu-img (base 0-4M = 0x11, mid 4-8M = 0x22, top 8-12M = 0x33, 16 MiB), checked afterwards with
 * qemu-img check / info --backing-chain / map and qemu-io patterns.
 */
class StreamCommitIT {
    private static final long MIB = 1 << 20;
    private static final Duration T = Duration.ofSeconds(30);

    @TempDir
    Path dir;
    private Path base;
    private Path mid;
    private Path top;

    @BeforeEach
    void chain() throws Exception {
        Tools.assumeTools("qemu-img", "qemu-io");
        base = dir.resolve("base.qcow2");
        mid = dir.resolve("mid.qcow2");
        top = dir.resolve("top.qcow2");
        Tools.qcow2Chain(base, mid, top, "16M");
        Tools.write(base, "qcow2", 0x11, 0, 4 * MIB);
        Tools.write(mid, "qcow2", 0x22, 4 * MIB, 4 * MIB);
        Tools.write(top, "qcow2", 0x33, 8 * MIB, 4 * MIB);
    }

    private DaemonProcess daemon() throws Exception {
        return DaemonProcess.start(dir, "--drive", "id=drive0,file=" + top + ",format=qcow2");
    }

    /** Event names, JOB_STATUS_CHANGE as J(status), until J(null). */
    static List<String> eventsUntilNull(QmpTestClient c) throws Exception {
        List<String> out = new ArrayList<>();
        while (true) {
            JsonNode e = c.events().poll(T.toSeconds(), java.util.concurrent.TimeUnit.SECONDS);
            assertThat(e).as("events so far: " + out).isNotNull();
            String name = e.path("event").asText();
            if (name.equals("JOB_STATUS_CHANGE")) {
                String s = e.path("data").path("status").asText();
                out.add("J(" + s + ")");
                if (s.equals("null")) {
                    return out;
                }
            } else {
                out.add(name);
            }
        }
    }

    private void assertAllData(Path img) throws Exception {
        Tools.assertPattern(img, "qcow2", 0x11, 0, 4 * MIB);
        Tools.assertPattern(img, "qcow2", 0x22, 4 * MIB, 4 * MIB);
        Tools.assertPattern(img, "qcow2", 0x33, 8 * MIB, 4 * MIB);
        Tools.assertPattern(img, "qcow2", 0, 12 * MIB, 4 * MIB);
    }

    @Test
    void streamOntoBaseCopiesMidIntoTopAndRewritesTheBackingFile() throws Exception {
        try (DaemonProcess d = daemon(); QmpTestClient c = d.connect()) {
            c.executeOk("block-stream", Map.of("device", "drive0", "base", base.toString()));
            List<String> ev = eventsUntilNull(c);
            assertThat(ev).containsExactly("J(created)", "J(running)", "J(waiting)", "J(pending)",
                    "BLOCK_JOB_COMPLETED", "J(concluded)", "J(null)");
            JsonNode blk = c.executeOk("query-block").get(0).path("inserted");
            assertThat(blk.path("backing_file_depth").asInt()).isEqualTo(1);
            c.executeOk("quit");
        }
        Tools.ok("qemu-img", "check", top.toString());
        String info = Tools.ok("qemu-img", "info", "--backing-chain", top.toString());
        assertThat(info).contains("backing file: " + base).doesNotContain("mid.qcow2");
        String map = Tools.ok("qemu-img", "map", "--output=json", top.toString());
        assertThat(map).contains("\"start\": 0, \"length\": 4194304, \"depth\": 1")
                .contains("\"start\": 4194304, \"length\": 4194304, \"depth\": 0")
                .contains("\"start\": 8388608, \"length\": 4194304, \"depth\": 0");
        assertAllData(top);
    }

    @Test
    void streamOfTheWholeChainLeavesNoBackingFile() throws Exception {
        try (DaemonProcess d = daemon(); QmpTestClient c = d.connect()) {
            c.executeOk("block-stream", Map.of("device", "drive0"));
            assertThat(eventsUntilNull(c)).contains("BLOCK_JOB_COMPLETED");
            c.executeOk("quit");
        }
        Tools.ok("qemu-img", "check", top.toString());
        assertThat(Tools.ok("qemu-img", "info", top.toString())).doesNotContain("backing file");
        assertAllData(top);
    }

    @Test
    void intermediateCommitOfMidIntoBase() throws Exception {
        try (DaemonProcess d = daemon(); QmpTestClient c = d.connect()) {
            c.executeOk("block-commit", Map.of("device", "drive0", "top", mid.toString(), "base", base.toString()));
            List<String> ev = eventsUntilNull(c);
            assertThat(ev).containsExactly("J(created)", "J(running)", "J(waiting)", "J(pending)",
                    "BLOCK_JOB_COMPLETED", "J(concluded)", "J(null)");
            c.executeOk("quit");
        }
        Tools.ok("qemu-img", "check", top.toString());
        Tools.ok("qemu-img", "check", base.toString());
        String info = Tools.ok("qemu-img", "info", "--backing-chain", top.toString());
        assertThat(info).contains("backing file: " + base).doesNotContain("mid.qcow2");
        Tools.assertPattern(base, "qcow2", 0x22, 4 * MIB, 4 * MIB);
        assertAllData(top);
    }

    @Test
    void activeCommitGoesReadyAndCompleteSwitchesTheDriveToBase() throws Exception {
        try (DaemonProcess d = daemon(); QmpTestClient c = d.connect()) {
            c.executeOk("block-commit", Map.of("device", "drive0"));
            JsonNode ready = c.waitEvent("BLOCK_JOB_READY", T);
            assertThat(ready.path("data").path("type").asText()).isEqualTo("commit");
            assertThat(ready.path("data").path("len").asLong()).isEqualTo(8 * MIB);
            c.executeOk("block-job-complete", Map.of("device", "drive0"));
            c.waitEvent("BLOCK_JOB_COMPLETED", T);
            c.waitEvent("JOB_STATUS_CHANGE", e -> e.path("data").path("status").asText().equals("null"), T);
            JsonNode blk = c.executeOk("query-block").get(0).path("inserted");
            assertThat(blk.path("file").asText()).isEqualTo(base.toString());
            assertThat(blk.path("backing_file_depth").asInt()).isEqualTo(0);
            c.executeOk("quit");
        }
        Tools.ok("qemu-img", "check", base.toString());
        assertAllData(base);
    }

    @Test
    void commitAndStreamErrorsMatchQemu() throws Exception {
        try (DaemonProcess d = daemon(); QmpTestClient c = d.connect()) {
            // top = the bottom image: base defaults to the bottom of the chain, i.e. top itself
            assertThat(c.executeError("block-commit", Map.of("device", "drive0", "top", base.toString()))
                    .path("desc").asText()).isEqualTo("cannot commit an image into itself");
            // an explicit base is looked up below top only (bdrv_find_backing_image)
            assertThat(c.executeError("block-commit", Map.of("device", "drive0", "top", base.toString(),
                    "base", base.toString())).path("desc").asText())
                    .isEqualTo("Can't find '" + base + "' in the backing chain");
            assertThat(c.executeError("block-commit", Map.of("device", "drive0", "top", "/x.qcow2"))
                    .path("desc").asText()).isEqualTo("Top image file /x.qcow2 not found");
            assertThat(c.executeError("block-commit", Map.of("device", "drive0", "base", "/x.qcow2"))
                    .path("desc").asText()).isEqualTo("Can't find '/x.qcow2' in the backing chain");
            assertThat(c.executeError("block-stream", Map.of("device", "drive0", "base", "/x.qcow2"))
                    .path("desc").asText()).isEqualTo("Can't find '/x.qcow2' in the backing chain");
            assertThat(c.executeError("block-stream", Map.of("device", "drive0", "backing-file", "b"))
                    .path("desc").asText()).isEqualTo("backing file specified, but streaming the entire chain");
            assertThat(c.executeError("block-commit", Map.of("device", "nodev")).path("class").asText())
                    .isEqualTo("DeviceNotFound");
            c.executeOk("quit");
        }
    }
}
