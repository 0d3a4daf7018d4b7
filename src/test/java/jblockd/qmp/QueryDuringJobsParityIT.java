package jblockd.qmp;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.JsonShape;
import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.QmpTestClient;

/**
 * query-block and query-named-block-nodes while a slow job runs, QEMU 7.2 against jblockd: the
 * job's filter node (copy-before-write for backup; mirror_top for mirror and active commit;
 * copy-on-read for stream; commit_top between an intermediate commit's top and its overlay) is listed with its child as backing-image, and query-block looks
 * through implicit filters (no filter-node-name) but not through named ones or backup's.
 * Compared: all member names and values, except auto node names, host allocation and file
 * nodes' lengths (the copy is under way), jblockd's io-status, and dirty-bitmaps (QEMU lists
 * its jobs' internal anonymous bitmaps there; jblockd's jobs keep theirs off the node lists).
 */
class QueryDuringJobsParityIT {
    private static final int SPEED = 64 * 1024;

    @TempDir
    Path dir;

    @BeforeEach
    void tools() {
        ExternalTools.assumeTools("qemu-system-x86_64", "qemu-img", "qemu-io");
    }

    /** Fresh images for one peer: a 8 MiB top over mid over base, all with data, and an empty target. */
    private Path images(String peer) throws Exception {
        Path d = Files.createDirectories(dir.resolve(peer));
        Path base = d.resolve("base.qcow2");
        Path top = d.resolve("top.qcow2");
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", base.toString(), "8M");
        ExternalTools.ok("qemu-io", "-f", "qcow2", "-c", "write -P 1 0 4M", base.toString());
        Path mid = d.resolve("mid.qcow2");
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", mid.toString());
        ExternalTools.ok("qemu-io", "-f", "qcow2", "-c", "write -P 3 0 2M", mid.toString());
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", top.toString());
        ExternalTools.ok("qemu-io", "-f", "qcow2", "-c", "write -P 2 4M 4M", top.toString());
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", d.resolve("tgt.qcow2").toString(), "8M");
        return d;
    }

    /** Starts the job, answers both queries, cancels. File names are made peer-independent. */
    private static JsonNode[] during(QmpTestClient c, Path d, String job) throws Exception {
        c.executeOk("blockdev-add", QmpTestClient.json("{\"driver\":\"qcow2\",\"node-name\":\"tgt\",\"file\":"
                + "{\"driver\":\"file\",\"filename\":\"" + d.resolve("tgt.qcow2") + "\"}}"));
        String common = "\"job-id\":\"j\",\"device\":\"drive0\",\"speed\":" + SPEED;
        String args = switch (job) {
            case "backup" -> "{" + common + ",\"target\":\"tgt\",\"sync\":\"full\"}";
            case "mirror" -> "{" + common + ",\"target\":\"tgt\",\"sync\":\"full\"}";
            case "mirror-named" -> "{" + common + ",\"target\":\"tgt\",\"sync\":\"full\",\"filter-node-name\":\"mf\"}";
            case "stream" -> "{" + common + "}";
            case "commit" -> "{" + common + "}";
            case "commit-intermediate" -> "{" + common + ",\"top\":\"" + d.resolve("mid.qcow2") + "\"}";
            case "commit-intermediate-named" -> "{" + common + ",\"top\":\"" + d.resolve("mid.qcow2")
                    + "\",\"filter-node-name\":\"ct\"}";
            default -> throw new IllegalArgumentException(job);
        };
        String command = switch (job) {
            case "backup" -> "blockdev-backup";
            case "mirror", "mirror-named" -> "blockdev-mirror";
            case "stream" -> "block-stream";
            default -> "block-commit";
        };
        c.executeOk(command, QmpTestClient.json(args));
        String prefix = d.toString();
        JsonNode qb = QmpTestClient.json(c.executeOk("query-block").toString().replace(prefix, "DIR"));
        JsonNode nodes = QmpTestClient.json(c.executeOk("query-named-block-nodes").toString().replace(prefix, "DIR"));
        c.executeOk("block-job-cancel", Map.of("device", "j", "force", true));
        return new JsonNode[] {qb, nodes};
    }

    private static void normalize(JsonNode n) {
        if (n instanceof ObjectNode o) {
            o.remove("dirty-bitmaps");
            o.remove("io-status");
            if (o.path("node-name").asText().matches("#block\\d+")) {
                o.put("node-name", "#block");
            }
            if (o.has("actual-size")) {
                assertThat(o.get("actual-size").isIntegralNumber()).isTrue();
                o.put("actual-size", 0);
            }
            if (o.path("format").asText().equals("file") && o.has("virtual-size")) {
                // a file node's length moves while the job writes (target; top during stream)
                assertThat(o.get("virtual-size").isIntegralNumber()).isTrue();
                o.put("virtual-size", 0);
            }
            o.properties().forEach(e -> normalize(e.getValue()));
        } else if (n.isArray()) {
            n.forEach(QueryDuringJobsParityIT::normalize);
        }
    }

    private static JsonNode sorted(JsonNode list) {
        List<JsonNode> items = new ArrayList<>();
        list.forEach(items::add);
        items.sort(Comparator.comparing((JsonNode e) -> e.path("drv").asText())
                .thenComparing(e -> e.path("file").asText()).thenComparing(e -> e.path("node-name").asText()));
        ArrayNode out = JsonNodeFactory.instance.arrayNode();
        items.forEach(out::add);
        return out;
    }

    @ParameterizedTest
    @ValueSource(strings = {"backup", "mirror", "mirror-named", "stream", "commit", "commit-intermediate",
        "commit-intermediate-named"})
    void queriesDuringAJobMatchQemu(String job) throws Exception {
        Path qd = images("qemu");
        Path qsock = qd.resolve("qmp.sock");
        Process qemu = new ProcessBuilder("qemu-system-x86_64", "-M", "none", "-nodefaults", "-display", "none",
                "-qmp", "unix:" + qsock + ",server=on,wait=off", "-drive",
                "if=none,id=drive0,file=" + qd.resolve("top.qcow2") + ",format=qcow2,node-name=top")
                .redirectErrorStream(true).redirectOutput(qd.resolve("qemu.log").toFile()).start();
        JsonNode[] q;
        try {
            for (int i = 0; i < 400 && !Files.exists(qsock) && qemu.isAlive(); i++) {
                Thread.sleep(25);
            }
            try (QmpTestClient c = QmpTestClient.connectUnix(qsock)) {
                q = during(c, qd, job);
            }
        } finally {
            qemu.destroy();
            qemu.waitFor(5, TimeUnit.SECONDS);
        }
        Path jd = images("jblockd");
        JsonNode[] j;
        try (DaemonProcess d = DaemonProcess.start(Files.createDirectories(jd.resolve("run")), "--drive",
                "id=drive0,file=" + jd.resolve("top.qcow2") + ",format=qcow2,node-name=top");
             QmpTestClient c = d.connect()) {
            j = during(c, jd, job);
        }
        for (JsonNode[] pair : List.of(q, j)) {
            normalize(pair[0]);
            normalize(pair[1]);
        }
        assertThat(JsonShape.of(j[0])).as(job + ": query-block members").isEqualTo(JsonShape.of(q[0]));
        assertThat(j[0]).as(job + ": query-block").isEqualTo(q[0]);
        assertThat(sorted(j[1])).as(job + ": query-named-block-nodes").isEqualTo(sorted(q[1]));
    }
}
