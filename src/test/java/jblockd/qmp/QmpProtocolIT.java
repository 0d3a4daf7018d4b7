package jblockd.qmp;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/** The QMP session over a real UNIX socket of a real daemon process (reference/qmp.md §1-§4). */
class QmpProtocolIT {
    @TempDir
    static Path dir;
    static DaemonProcess daemon;

    @BeforeAll
    static void startDaemon() throws IOException {
        daemon = DaemonProcess.start(dir);
    }

    @AfterAll
    static void stopDaemon() {
        daemon.close();
    }

    private static String desc(JsonNode reply) {
        return reply.at("/error/desc").asText();
    }

    @Test
    void greetingHasQemuShapeWithoutOob() throws IOException {
        try (QmpTestClient c = QmpTestClient.connectUnixRaw(daemon.qmpSocket())) {
            JsonNode g = c.greeting().get("QMP");
            assertThat(g.at("/version/qemu/major").asInt()).isEqualTo(7);
            assertThat(g.at("/version/qemu/minor").asInt()).isEqualTo(2);
            assertThat(g.at("/version/qemu/micro").isInt()).isTrue();
            assertThat(g.at("/version/package").asText()).startsWith("jblockd ");
            assertThat(g.get("capabilities").isArray()).isTrue();
            assertThat(g.get("capabilities").size()).isZero();
        }
    }

    @Test
    void socketIsCreatedMode0600() throws IOException {
        assertThat(PosixFilePermissions.toString(Files.getPosixFilePermissions(daemon.qmpSocket())))
                .isEqualTo("rw-------");
    }

    @Test
    void negotiationRules() throws IOException {
        try (QmpTestClient c = QmpTestClient.connectUnixRaw(daemon.qmpSocket())) {
            JsonNode r = c.execute("query-version");
            assertThat(r.at("/error/class").asText()).isEqualTo("CommandNotFound");
            assertThat(desc(r)).isEqualTo("Expecting capabilities negotiation with 'qmp_capabilities'");
            r = c.execute("nosuch");
            assertThat(desc(r)).isEqualTo("Expecting capabilities negotiation with 'qmp_capabilities'");
            r = c.execute("qmp_capabilities", Map.of("enable", new String[] {"oob"}));
            assertThat(r.at("/error/class").asText()).isEqualTo("GenericError");
            assertThat(desc(r)).isEqualTo("Capability 'oob' not available");
            r = c.execute("qmp_capabilities", Map.of("enable", new String[] {"bogus"}));
            assertThat(desc(r)).isEqualTo("Parameter 'null' does not accept value 'bogus'");
            assertThat(c.execute("qmp_capabilities").get("return").isEmpty()).isTrue();
            r = c.execute("qmp_capabilities");
            assertThat(r.at("/error/class").asText()).isEqualTo("CommandNotFound");
            assertThat(desc(r)).isEqualTo("Capabilities negotiation is already complete, command ignored");
            assertThat(c.executeOk("query-version").at("/qemu/major").asInt()).isEqualTo(7);
        }
    }

    @Test
    void idIsEchoedVerbatimOnSuccessAndError() throws IOException {
        try (QmpTestClient c = QmpTestClient.connectUnix(daemon.qmpSocket())) {
            JsonNode objId = QmpTestClient.json("{\"a\":[1,2],\"b\":null}");
            JsonNode r = c.executeWithId("query-version", null, objId);
            assertThat(r.get("id")).isEqualTo(objId);
            r = c.executeWithId("nosuch", null, 7);
            assertThat(r.get("id").asInt()).isEqualTo(7);
            assertThat(r.at("/error/class").asText()).isEqualTo("CommandNotFound");
            assertThat(desc(r)).isEqualTo("The command nosuch has not been found");
            r = c.executeWithId("query-version", Map.of("x", 1), "s");
            assertThat(r.get("id").asText()).isEqualTo("s");
            assertThat(desc(r)).isEqualTo("Parameter 'x' is unexpected");
            assertThat(c.execute("query-version").has("id")).isFalse();
        }
    }

    @Test
    void envelopeErrorsMatchQemu() throws IOException {
        try (QmpTestClient c = QmpTestClient.connectUnix(daemon.qmpSocket())) {
            Map<String, String> cases = new java.util.LinkedHashMap<>();
            cases.put("[1,2]", "QMP input must be a JSON object");
            cases.put("\"str\"", "QMP input must be a JSON object");
            cases.put("42", "QMP input must be a JSON object");
            cases.put("{\"execute\":1}", "QMP input member 'execute' must be a string");
            cases.put("{\"foo\":1}", "QMP input member 'foo' is unexpected");
            cases.put("{\"execute\":\"x\",\"bar\":1}", "QMP input member 'bar' is unexpected");
            cases.put("{\"execute\":\"x\",\"arguments\":[]}", "QMP input member 'arguments' must be an object");
            cases.put("{\"exec-oob\":\"query-version\"}", "QMP input member 'exec-oob' is unexpected");
            cases.put("{}", "QMP input lacks member 'execute'");
            for (Map.Entry<String, String> e : cases.entrySet()) {
                c.sendRaw(e.getKey() + "\n");
                JsonNode r = c.nextReply();
                assertThat(r.at("/error/class").asText()).as(e.getKey()).isEqualTo("GenericError");
                assertThat(desc(r)).as(e.getKey()).isEqualTo(e.getValue());
                assertThat(r.has("id")).isFalse();
            }
            c.sendRaw("{\"execute\":1,\"id\":5}");
            assertThat(c.nextReply().get("id").asInt()).isEqualTo(5);
        }
    }

    @Test
    void jsonErrorsAreReportedAndTheConnectionRecovers() throws IOException {
        try (QmpTestClient c = QmpTestClient.connectUnix(daemon.qmpSocket())) {
            c.sendRaw("{'execute': 'query-version'}\n");
            assertThat(c.nextReply().at("/return/qemu/major").asInt()).isEqualTo(7);
            c.sendRaw("{\"execute\":\"query-version\",}\n");
            assertThat(desc(c.nextReply())).isEqualTo("JSON parse error, expecting value");
            c.sendRaw("garbage\n");
            assertThat(desc(c.nextReply())).isEqualTo("JSON parse error, invalid keyword 'garbage'");
            c.sendRaw("{\"execute\":\"query-version\",\"id\":1,\"id\":2}\n");
            assertThat(desc(c.nextReply())).isEqualTo("JSON parse error, duplicate key");
            c.sendRaw(new byte[] {(byte) 0xff, '\n'});
            assertThat(desc(c.nextReply())).isEqualTo("JSON parse error, stray '\uFFFD'");
            c.sendRaw("{\"execute\":\"query-version\",\"arguments\":{}}");
            assertThat(c.nextReply().has("return")).isTrue();
            assertThat(c.executeOk("query-version").at("/qemu/minor").asInt()).isEqualTo(2);
        }
    }

    @Test
    void severalRequestsOnOneLineAndOneSplitOverWrites() throws IOException, InterruptedException {
        try (QmpTestClient c = QmpTestClient.connectUnix(daemon.qmpSocket())) {
            c.sendRaw("{\"execute\":\"query-version\",\"id\":1}{\"execute\":\"query-commands\",\"id\":2}"
                    + "  {\"execute\":\"nosuch\",\"id\":3}\r\n");
            assertThat(c.nextReply().get("id").asInt()).isEqualTo(1);
            JsonNode two = c.nextReply();
            assertThat(two.get("id").asInt()).isEqualTo(2);
            assertThat(two.get("return").isArray()).isTrue();
            assertThat(c.nextReply().get("id").asInt()).isEqualTo(3);

            c.sendRaw("{\"execute\":\"query-version\"");
            Thread.sleep(100);
            assertThat(c.events()).isEmpty();
            c.sendRaw("\n, \"id\": \"split\"");
            Thread.sleep(50);
            c.sendRaw("\n}");
            assertThat(c.nextReply().get("id").asText()).isEqualTo("split");
        }
    }

    @Test
    void argumentValidationErrors() throws IOException {
        try (QmpTestClient c = QmpTestClient.connectUnix(daemon.qmpSocket())) {
            assertThat(c.executeError("blockdev-del", null).get("desc").asText())
                    .isEqualTo("Parameter 'node-name' is missing");
            assertThat(c.executeError("blockdev-del", Map.of("node-name", 1)).get("desc").asText())
                    .isEqualTo("Invalid parameter type for 'node-name', expected: string");
            assertThat(c.executeError("query-named-block-nodes", Map.of("flat", "yes")).get("desc").asText())
                    .isEqualTo("Invalid parameter type for 'flat', expected: boolean");
            assertThat(c.executeError("blockdev-add", QmpTestClient.json(
                    "{\"driver\":\"raw\",\"node-name\":\"n\",\"file\":{\"driver\":\"file\"}}")).get("desc").asText())
                    .isEqualTo("Parameter 'file.filename' is missing");
            assertThat(c.executeError("blockdev-add", QmpTestClient.json(
                    "{\"driver\":\"blkdebug\",\"node-name\":\"b\",\"image\":\"x\",\"inject-error\":[{\"errno\":5}]}"))
                    .get("desc").asText()).isEqualTo("Parameter 'inject-error[0].event' is missing");
            assertThat(c.executeError("blockdev-add", QmpTestClient.json(
                    "{\"driver\":\"null-co\",\"node-name\":\"n\",\"size\":1.5}")).get("desc").asText())
                    .isEqualTo("Invalid parameter type for 'size', expected: integer");
            assertThat(c.executeError("blockdev-add", QmpTestClient.json(
                    "{\"driver\":\"nosuch\",\"node-name\":\"n\"}")).get("desc").asText())
                    .isEqualTo("Parameter 'driver' does not accept value 'nosuch'");
            assertThat(c.executeError("blockdev-add", QmpTestClient.json(
                    "{\"driver\":\"qcow2\",\"node-name\":\"n\",\"file\":\"f\",\"backing\":5}")).get("desc").asText())
                    .isEqualTo("Invalid parameter type for 'backing', expected: BlockdevRefOrNull");
            assertThat(c.executeError("blockdev-add", QmpTestClient.json(
                    "{\"driver\":\"null-co\",\"node-name\":\"n\",\"cache\":{\"direct\":1}}")).get("desc").asText())
                    .isEqualTo("Invalid parameter type for 'cache.direct', expected: boolean");
        }
    }

    @Test
    void blockdevAddAndDelOfAFileNode() throws IOException {
        Path img = dir.resolve("a.raw");
        Files.write(img, new byte[1 << 20]);
        try (QmpTestClient c = QmpTestClient.connectUnix(daemon.qmpSocket())) {
            c.executeOk("blockdev-add", Map.of("driver", "file", "node-name", "f1", "filename", img.toString()));
            assertThat(c.executeError("blockdev-add", Map.of("driver", "file", "node-name", "f1",
                    "filename", img.toString())).get("desc").asText())
                    .isEqualTo("Duplicate nodes with node-name='f1'");
            assertThat(c.executeError("blockdev-add", Map.of("driver", "file", "filename", img.toString()))
                    .get("desc").asText()).isEqualTo("'node-name' must be specified for the root node");
            assertThat(c.executeError("blockdev-add", Map.of("driver", "file", "node-name", "1x",
                    "filename", img.toString())).get("desc").asText()).isEqualTo("Invalid node-name: '1x'");
            JsonNode nodes = c.executeOk("query-named-block-nodes");
            JsonNode f1 = null;
            for (JsonNode n : nodes) {
                if (n.get("node-name").asText().equals("f1")) {
                    f1 = n;
                }
            }
            assertThat(f1).isNotNull();
            assertThat(f1.get("drv").asText()).isEqualTo("file");
            assertThat(f1.get("file").asText()).isEqualTo(img.toString());
            assertThat(f1.at("/image/virtual-size").asLong()).isEqualTo(1 << 20);
            assertThat(f1.get("backing_file_depth").asInt()).isZero();
            assertThat(f1.at("/cache/writeback").asBoolean()).isTrue();
            c.executeOk("blockdev-del", Map.of("node-name", "f1"));
            assertThat(c.executeError("blockdev-del", Map.of("node-name", "f1")).get("desc").asText())
                    .isEqualTo("Failed to find node with node-name='f1'");
            assertThat(c.executeError("blockdev-add", Map.of("driver", "file", "node-name", "f2",
                    "filename", dir.resolve("nosuch").toString())).get("desc").asText())
                    .contains("nosuch");
        }
    }

    @Test
    void eventsReachOnlyNegotiatedClientsAndSlowReaderDoesNotBlockOthers() throws Exception {
        try (QmpTestClient c = QmpTestClient.connectUnix(daemon.qmpSocket())) {
            long start = System.nanoTime();
            for (int i = 0; i < 20; i++) {
                c.executeOk("query-version");
            }
            assertThat(Duration.ofNanos(System.nanoTime() - start)).isLessThan(Duration.ofSeconds(5));
        }
    }
}
