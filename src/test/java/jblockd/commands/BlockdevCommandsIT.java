package jblockd.commands;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.DriverRegistry;
import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/** blockdev-add / blockdev-del of every driver over QMP, with QEMU's refusals (blockdev.c). */
class BlockdevCommandsIT {
    @TempDir
    Path dir;

    private static boolean hasDrivers(String... names) {
        DriverRegistry r = DriverRegistry.standard();
        for (String n : names) {
            if (r.factory(n) == null) {
                return false;
            }
        }
        return true;
    }

    private static Map<String, JsonNode> nodes(QmpTestClient c) throws IOException {
        Map<String, JsonNode> m = new HashMap<>();
        for (JsonNode n : c.executeOk("query-named-block-nodes")) {
            m.put(n.get("node-name").asText(), n);
        }
        return m;
    }

    private static String err(QmpTestClient c, String cmd, String json) throws IOException {
        return c.executeError(cmd, QmpTestClient.json(json)).get("desc").asText();
    }

    private void qemuImg(String... args) throws Exception {
        String[] cmd = new String[args.length + 1];
        cmd[0] = "qemu-img";
        System.arraycopy(args, 0, cmd, 1, args.length);
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        assertThat(p.waitFor(60, TimeUnit.SECONDS)).isTrue();
        assertThat(p.exitValue()).as(out).isZero();
    }

    @Test
    void everyDriverByReferenceAndInlineThenDeleteInOrder() throws Exception {
        assumeTrue(hasDrivers("raw", "qcow2", "blkdebug", "null-co"), "all drivers needed");
        Path raw = dir.resolve("r.raw");
        Files.write(raw, new byte[1 << 20]);
        Path q = dir.resolve("q.qcow2");
        qemuImg("create", "-f", "qcow2", q.toString(), "2M");
        try (DaemonProcess d = DaemonProcess.start(dir); QmpTestClient c = d.connect()) {
            c.executeOk("blockdev-add", QmpTestClient.json("{\"driver\":\"file\",\"node-name\":\"f0\",\"filename\":\""
                    + raw + "\"}"));
            c.executeOk("blockdev-add", QmpTestClient.json(
                    "{\"driver\":\"raw\",\"node-name\":\"r0\",\"file\":\"f0\",\"offset\":512,\"size\":4096}"));
            c.executeOk("blockdev-add", QmpTestClient.json("{\"driver\":\"qcow2\",\"node-name\":\"q0\","
                    + "\"cache\":{\"direct\":false,\"no-flush\":true},\"read-only\":true,"
                    + "\"file\":{\"driver\":\"file\",\"filename\":\"" + q + "\"},\"backing\":null}"));
            c.executeOk("blockdev-add", QmpTestClient.json("{\"driver\":\"blkdebug\",\"node-name\":\"b0\","
                    + "\"image\":{\"driver\":\"null-co\",\"node-name\":\"n1\",\"size\":65536},"
                    + "\"inject-error\":[{\"event\":\"read_aio\",\"errno\":5,\"sector\":0,\"once\":true}],\"align\":512}"));
            c.executeOk("blockdev-add", QmpTestClient.json(
                    "{\"driver\":\"null-co\",\"node-name\":\"n0\",\"size\":1048576,\"read-zeroes\":true}"));

            Map<String, JsonNode> n = nodes(c);
            assertThat(n).containsKeys("f0", "r0", "q0", "b0", "n0", "n1");
            assertThat(n.get("r0").at("/image/virtual-size").asLong()).isEqualTo(4096);
            assertThat(n.get("r0").get("drv").asText()).isEqualTo("raw");
            assertThat(n.get("q0").get("drv").asText()).isEqualTo("qcow2");
            assertThat(n.get("q0").get("ro").asBoolean()).isTrue();
            assertThat(n.get("q0").at("/cache/no-flush").asBoolean()).isTrue();
            assertThat(n.get("q0").at("/image/virtual-size").asLong()).isEqualTo(2 << 20);
            assertThat(n.get("n0").at("/image/virtual-size").asLong()).isEqualTo(1 << 20);
            assertThat(n.get("b0").get("drv").asText()).isEqualTo("blkdebug");

            // refusals, in QEMU's order and words
            assertThat(err(c, "blockdev-del", "{\"node-name\":\"f0\"}")).isEqualTo("Block device f0 is in use");
            assertThat(err(c, "blockdev-del", "{\"node-name\":\"n1\"}")).isEqualTo("Node n1 is not owned by the monitor");
            assertThat(err(c, "blockdev-del", "{\"node-name\":\"nope\"}"))
                    .isEqualTo("Failed to find node with node-name='nope'");
            assertThat(err(c, "blockdev-add", "{\"driver\":\"raw\",\"node-name\":\"r1\",\"file\":\"nope\"}"))
                    .isEqualTo("Cannot find device='nope' nor node-name='nope'");
            assertThat(err(c, "blockdev-add", "{\"driver\":\"null-co\",\"node-name\":\"n0\"}"))
                    .isEqualTo("Duplicate nodes with node-name='n0'");

            // deleting parents releases children: then the children can go
            c.executeOk("blockdev-del", Map.of("node-name", "r0"));
            c.executeOk("blockdev-del", Map.of("node-name", "f0"));
            c.executeOk("blockdev-del", Map.of("node-name", "q0"));
            c.executeOk("blockdev-del", Map.of("node-name", "b0"));
            c.executeOk("blockdev-del", Map.of("node-name", "n0"));
            assertThat(nodes(c)).doesNotContainKeys("f0", "r0", "q0", "b0", "n0", "n1");
        }
        qemuImg("check", q.toString());
    }

    @Test
    void optionsJblockdDoesNotImplementAreRefusedNotIgnored() throws Exception {
        Path raw = dir.resolve("o.raw");
        java.nio.file.Files.write(raw, new byte[1 << 20]);
        try (DaemonProcess d = DaemonProcess.start(dir); QmpTestClient c = d.connect()) {
            // detect-zeroes is honoured (DetectZeroesQemuIT); an unknown value is the schema's error
            assertThat(err(c, "blockdev-add", "{\"driver\": \"file\", \"node-name\": \"f0\", \"filename\": \""
                    + raw + "\", \"detect-zeroes\": \"yes\"}"))
                    .isEqualTo("Parameter 'detect-zeroes' does not accept value 'yes'");
            // QEMU 7.2's own check comes first (observed)
            assertThat(err(c, "blockdev-add", "{\"driver\": \"file\", \"node-name\": \"f0\", \"filename\": \""
                    + raw + "\", \"detect-zeroes\": \"unmap\"}"))
                    .isEqualTo("setting detect-zeroes to unmap is not allowed without setting discard operation to unmap");
            // QEMU's block.c text: sharing every permission is for readers only
            assertThat(err(c, "blockdev-add", "{\"driver\": \"file\", \"node-name\": \"f0\", \"filename\": \""
                    + raw + "\", \"force-share\": true}"))
                    .isEqualTo("force-share=on can only be used with read-only images");
            assertThat(nodes(c)).doesNotContainKey("f0");
            c.executeOk("blockdev-add", QmpTestClient.json("{\"driver\": \"file\", \"node-name\": \"f0\", \"filename\": \""
                    + raw + "\", \"detect-zeroes\": \"off\", \"force-share\": true, \"read-only\": true}"));
            assertThat(nodes(c)).containsKey("f0");
        }
    }

    @Test
    void nodeNameOfADeviceIsInUseAndConflictsWithDeviceIds() throws Exception {
        assumeTrue(hasDrivers("raw"), "raw driver needed");
        Path raw = dir.resolve("d.raw");
        Files.write(raw, new byte[65536]);
        try (DaemonProcess d = DaemonProcess.start(dir, "--drive", "id=drive0,file=" + raw + ",format=raw,node-name=dn");
             QmpTestClient c = d.connect()) {
            assertThat(err(c, "blockdev-del", "{\"node-name\":\"dn\"}")).isEqualTo("Node dn is in use");
            assertThat(err(c, "blockdev-del", "{\"node-name\":\"drive0\"}"))
                    .isEqualTo("Failed to find node with node-name='drive0'");
            assertThat(err(c, "blockdev-add", "{\"driver\":\"null-co\",\"node-name\":\"drive0\"}"))
                    .isEqualTo("node-name=drive0 is conflicting with a device id");
            JsonNode b = c.executeOk("query-block").get(0);
            assertThat(b.at("/inserted/node-name").asText()).isEqualTo("dn");
            assertThat(b.at("/inserted/image/virtual-size").asLong()).isEqualTo(65536);
            // rerror/werror default report/enospc: io-status is tracked
            assertThat(b.get("io-status").asText()).isEqualTo("ok");
        }
    }

    @Test
    void queryQmpSchemaDescribesCommandsAndTypes() throws Exception {
        try (DaemonProcess d = DaemonProcess.start(dir); QmpTestClient c = d.connect()) {
            Map<String, JsonNode> byName = new HashMap<>();
            for (JsonNode e : c.executeOk("query-qmp-schema")) {
                byName.put(e.get("name").asText(), e);
            }
            JsonNode add = byName.get("blockdev-add");
            assertThat(add.get("meta-type").asText()).isEqualTo("command");
            JsonNode opts = byName.get(add.get("arg-type").asText());
            assertThat(opts.get("meta-type").asText()).isEqualTo("object");
            assertThat(opts.get("tag").asText()).isEqualTo("driver");
            assertThat(opts.get("variants").size()).isGreaterThanOrEqualTo(5);
            assertThat(byName.get("str").get("json-type").asText()).isEqualTo("string");
            assertThat(byName.get("SHUTDOWN").get("meta-type").asText()).isEqualTo("event");
            assertThat(byName.get("BlockdevDriver").get("values").toString()).contains("qcow2");
            for (JsonNode cmd : c.executeOk("query-commands")) {
                assertThat(byName).containsKey(cmd.get("name").asText());
            }
        }
    }
}
