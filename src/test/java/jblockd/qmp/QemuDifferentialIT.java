package jblockd.qmp;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.DriverRegistry;
import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.JsonShape;
import jblockd.testsupport.QmpTestClient;

/**
 * The same exchanges against QEMU 7.2 ({@code qemu-system-x86_64 -M none}) and jblockd, over
 * real sockets: greeting shape, error classes and texts, query result member names and types.
 * Skips when qemu-system-x86_64 or qemu-img is absent.
 */
class QemuDifferentialIT {
    @TempDir
    static Path dir;
    static Process qemu;
    static DaemonProcess jblockd;
    static QmpTestClient q;
    static QmpTestClient j;
    static boolean withDrive;

    private static boolean hasTool(String tool) {
        for (String p : System.getenv("PATH").split(":")) {
            if (Files.isExecutable(Path.of(p, tool))) {
                return true;
            }
        }
        return false;
    }

    @BeforeAll
    static void start() throws Exception {
        assumeTrue(hasTool("qemu-system-x86_64") && hasTool("qemu-img"), "qemu-system-x86_64 and qemu-img needed");
        Path img = dir.resolve("d.qcow2");
        Path base = dir.resolve("base.qcow2");
        run("qemu-img", "create", "-f", "qcow2", base.toString(), "8M");
        run("qemu-img", "create", "-f", "qcow2", "-b", base.toString(), "-F", "qcow2", img.toString());
        withDrive = DriverRegistry.standard().factory("qcow2") != null;
        String drive = "if=none,id=drive0,file=" + img + ",format=qcow2,node-name=root0";
        Path qsock = dir.resolve("qemu.sock");
        List<String> qcmd = new ArrayList<>(List.of("qemu-system-x86_64", "-M", "none", "-nodefaults", "-display",
                "none", "-qmp", "unix:" + qsock + ",server=on,wait=off"));
        if (withDrive) {
            // both peers open the one image read-write: QEMU must not take its lock bytes,
            // or jblockd (which honours them) would be refused at start
            qcmd.addAll(List.of("-drive", drive + ",file.locking=off"));
        }
        qemu = new ProcessBuilder(qcmd).redirectErrorStream(true).start();
        for (int i = 0; i < 400 && !Files.exists(qsock); i++) {
            Thread.sleep(25);
        }
        q = QmpTestClient.connectUnix(qsock);
        Files.createDirectories(dir.resolve("j"));
        jblockd = withDrive ? DaemonProcess.start(dir.resolve("j"), "--drive", drive.replace("if=none,", ""))
                : DaemonProcess.start(dir.resolve("j"));
        j = jblockd.connect();
    }

    @AfterAll
    static void stop() throws InterruptedException {
        JsonShape.stopPair(q, j, qemu, jblockd);
    }

    private static void run(String... cmd) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        p.getInputStream().readAllBytes();
        assertThat(p.waitFor()).isZero();
    }

    @Test
    void greetingHasTheSameShape() {
        Map<String, String> qs = JsonShape.of(q.greeting());
        Map<String, String> js = JsonShape.of(j.greeting());
        qs.remove("QMP.capabilities[]"); // QEMU offers oob, jblockd offers nothing
        js.remove("QMP.capabilities[]");
        assertThat(js).isEqualTo(qs);
    }

    @Test
    void errorsForBadArgumentsAreTheSame() throws IOException {
        List<JsonNode> requests = new ArrayList<>(List.of(
                QmpTestClient.json("{\"execute\":\"nosuch\"}"),
                QmpTestClient.json("{\"execute\":\"query-version\",\"arguments\":{\"x\":1}}"),
                QmpTestClient.json("{\"execute\":\"blockdev-del\"}"),
                QmpTestClient.json("{\"execute\":\"blockdev-del\",\"arguments\":{\"node-name\":\"nosuch\"}}"),
                QmpTestClient.json("{\"execute\":\"blockdev-del\",\"arguments\":{\"node-name\":7}}"),
                QmpTestClient.json("{\"execute\":\"query-named-block-nodes\",\"arguments\":{\"flat\":\"x\"}}"),
                QmpTestClient.json("{\"execute\":\"blockdev-add\",\"arguments\":{\"driver\":\"qcow2\","
                        + "\"node-name\":\"n1\",\"file\":{\"driver\":\"file\"}}}"),
                QmpTestClient.json("{\"execute\":\"blockdev-add\",\"arguments\":{\"driver\":\"qcow2\","
                        + "\"node-name\":\"n1\",\"file\":{\"driver\":\"file\",\"filename\":\"/x\",\"bogus\":1}}}"),
                QmpTestClient.json("{\"execute\":\"blockdev-add\",\"arguments\":{\"driver\":\"blkdebug\","
                        + "\"node-name\":\"b\",\"image\":\"x\",\"inject-error\":[{\"errno\":5}]}}"),
                QmpTestClient.json("{\"execute\":\"blockdev-add\",\"arguments\":{\"driver\":\"blkdebug\","
                        + "\"node-name\":\"b\",\"image\":5}}"),
                QmpTestClient.json("{\"execute\":\"blockdev-add\",\"arguments\":{\"driver\":\"null-co\","
                        + "\"node-name\":\"n\",\"size\":1.5}}"),
                QmpTestClient.json("{\"execute\":\"blockdev-add\",\"arguments\":{\"driver\":\"null-co\","
                        + "\"node-name\":\"n\",\"discard\":\"bogus\"}}"),
                QmpTestClient.json("{\"execute\":\"blockdev-add\",\"arguments\":{\"driver\":\"file\","
                        + "\"filename\":\"/x\"}}"),
                QmpTestClient.json("{\"execute\":\"blockdev-add\",\"arguments\":{\"driver\":\"file\","
                        + "\"node-name\":\"1bad\",\"filename\":\"/x\"}}"),
                QmpTestClient.json("{\"execute\":\"blockdev-add\",\"arguments\":{\"driver\":\"raw\","
                        + "\"node-name\":\"r\",\"file\":\"nosuch\"}}"),
                QmpTestClient.json("{\"execute\":\"qmp_capabilities\"}")));
        if (DriverRegistry.standard().factory("raw") == null) {
            requests.removeIf(r -> r.at("/arguments/driver").asText().equals("raw"));
        }
        for (JsonNode req : requests) {
            q.sendRaw(req.toString());
            JsonNode qr = q.nextReply();
            j.sendRaw(req.toString());
            JsonNode jr = j.nextReply();
            assertThat(jr.get("error")).as(req.toString()).isEqualTo(qr.get("error"));
        }
        if (withDrive) {
            JsonNode req = QmpTestClient.json("{\"execute\":\"blockdev-del\",\"arguments\":{\"node-name\":\"root0\"}}");
            q.sendRaw(req.toString());
            j.sendRaw(req.toString());
            assertThat(j.nextReply()).isEqualTo(q.nextReply());
        }
    }

    @Test
    void jsonAndEnvelopeErrorsAreTheSame() throws IOException {
        for (String in : List.of("[1,2]", "42", "{\"execute\":1}", "{\"foo\":1}",
                "{\"execute\":\"x\",\"arguments\":[]}", "{\"execute\":\"query-version\",}", "garbage",
                "{\"execute\":\"query-version\",\"id\":1,\"id\":2}", "{'execute':'query-version','id':'sq'}",
                "}", "]", "{\"a\" 1}", "[1 2]", "{1:2}", "{\"a\":1 \"b\":2}", "tru", "@", "[1,]",
                "{\"execute\":\"query-version\",\"arguments\":{\"a\":[1,2,]}}")) {
            q.sendRaw(in + "\n");
            j.sendRaw(in + "\n");
            JsonNode qr = q.nextReply();
            JsonNode jr = j.nextReply();
            if (qr.has("return")) {
                assertThat(jr.has("return")).as(in).isTrue();
                assertThat(jr.get("id")).as(in).isEqualTo(qr.get("id"));
            } else {
                assertThat(jr).as(in).isEqualTo(qr);
            }
        }
    }

    @Test
    void queryResultsHaveTheSameMemberNamesAndTypes() throws IOException {
        assumeTrue(withDrive, "qcow2 driver not on this branch");
        for (String cmd : List.of("query-block", "query-named-block-nodes")) {
            Map<String, String> qs = JsonShape.of(q.executeOk(cmd));
            Map<String, String> js = JsonShape.of(j.executeOk(cmd));
            // every member QEMU shows, format-specific and actual-size included (values:
            // QueryBlockParityIT)
            // io-status: SPEC devices have a guest, so jblockd shows it when werror/rerror can stop
            js.remove("[].io-status");
            assertThat(js).as(cmd).isEqualTo(qs);
        }
        Map<String, String> qv = JsonShape.of(q.executeOk("query-version"));
        assertThat(JsonShape.of(j.executeOk("query-version"))).isEqualTo(qv);
    }

    @Test
    void queryStatusHasTheSameShapeWhenImplemented() throws IOException {
        JsonNode jr = j.execute("query-status");
        assumeTrue(jr.has("return"), "query-status is implemented by RunStateCommands (other branch)");
        assertThat(JsonShape.of(jr.get("return")))
                .isEqualTo(JsonShape.of(q.executeOk("query-status")));
    }
}
