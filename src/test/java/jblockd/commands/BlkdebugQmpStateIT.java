package jblockd.commands;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.QmpTestClient;

/**
 * blkdebug's state machine over QMP (BlkdebugInjectErrorOptions.state / immediately,
 * BlockdevOptionsBlkdebug.set-state): the same blkdebug JSON under a raw node, driven by the
 * same guest I/O sequence, once through {@code qemu-io 'json:{...}'} (QEMU 7.2) and once through
 * an NBD export of a node added with blockdev-add on jblockd. Both must give the same outcome
 * per request, and the images the same bytes afterwards.
 */
class BlkdebugQmpStateIT {
    /**
     * State 1 → 2 on the first write; then a write fails once with ENOSPC and reads fail with
     * EIO, both only in state 2. (No write follows the first failed read: QEMU keeps an
     * activated read rule armed for later writes as well, a difference described in Rule.)
     */
    private static final String RULES = "\"inject-error\":["
            + "{\"event\":\"write_aio\",\"state\":2,\"errno\":28,\"once\":true},"
            + "{\"event\":\"read_aio\",\"state\":2,\"errno\":5,\"immediately\":true}],"
            + "\"set-state\":[{\"event\":\"write_aio\",\"state\":1,\"new_state\":2}]";
    private static final List<String> SEQUENCE = List.of("read 0 4k", "write -P 0x33 0 4k", "write -P 0x44 0 4k",
            "write -P 0x55 4k 4k", "read 0 4k", "read 8k 4k");
    private static final List<String> EXPECTED = List.of("ok", "ok", "No space left on device", "ok",
            "Input/output error", "Input/output error");

    @TempDir
    Path dir;

    @BeforeEach
    void tools() {
        ExternalTools.assumeTools("qemu-io", "qemu-img");
    }

    /** qemu-io's outcome of each request: "ok" or the strerror text. */
    private static List<String> run(String format, String target) throws Exception {
        List<String> argv = new ArrayList<>(List.of("qemu-io"));
        if (format != null) {
            argv.addAll(List.of("-f", format));
        }
        for (String c : SEQUENCE) {
            argv.addAll(List.of("-c", c));
        }
        argv.add(target);
        ExternalTools.Result r = ExternalTools.run(argv.toArray(String[]::new));
        List<String> outcomes = new ArrayList<>();
        for (String line : r.out().split("\n")) {
            if (line.startsWith("read failed: ") || line.startsWith("write failed: ")) {
                outcomes.add(line.substring(line.indexOf(": ") + 2).strip());
            } else if (line.startsWith("read ") || line.startsWith("wrote ")) {
                outcomes.add("ok");
            }
        }
        assertThat(outcomes).as(r.out()).hasSize(SEQUENCE.size());
        return outcomes;
    }

    @Test
    void stateGatedRulesFireOnlyInTheirStateLikeQemu() throws Exception {
        Path qimg = dir.resolve("q.raw");
        Path jimg = dir.resolve("j.raw");
        // fully allocated: an NBD server answers reads of holes from block status without
        // reading (a sparse read), which would bypass the read rule on jblockd's path only
        for (Path p : List.of(qimg, jimg)) {
            ExternalTools.ok("qemu-img", "create", "-q", "-f", "raw", p.toString(), "1M");
            ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 0x01 0 1M", p.toString());
        }

        List<String> qemu = run(null, "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"blkdebug\",\"image\":"
                + "{\"driver\":\"file\",\"filename\":\"" + qimg + "\"}," + RULES + "}}");
        assertThat(qemu).as("QEMU 7.2's outcomes").isEqualTo(EXPECTED);

        Path sock = dir.resolve("nbd.sock");
        List<String> ours;
        try (DaemonProcess d = DaemonProcess.start(dir, "--nbd-server", "addr.type=unix,addr.path=" + sock);
             QmpTestClient c = d.connect()) {
            c.executeOk("blockdev-add", QmpTestClient.json("{\"driver\":\"raw\",\"node-name\":\"fmt\","
                    + "\"file\":{\"driver\":\"blkdebug\",\"node-name\":\"dbg\",\"image\":{\"driver\":\"file\","
                    + "\"filename\":\"" + jimg + "\"}," + RULES + "}}"));
            c.executeOk("block-export-add", QmpTestClient.json("{\"type\":\"nbd\",\"id\":\"e0\","
                    + "\"node-name\":\"fmt\",\"name\":\"disk\",\"writable\":true}"));
            ours = run("raw", "nbd+unix:///disk?socket=" + sock);
            JsonNode dbg = null;
            for (JsonNode n : c.executeOk("query-named-block-nodes")) {
                if (n.path("node-name").asText().equals("dbg")) {
                    dbg = n;
                }
            }
            assertThat(dbg).isNotNull();
            assertThat(dbg.get("drv").asText()).isEqualTo("blkdebug");
        }
        assertThat(ours).isEqualTo(qemu);
        // the failed write left no trace, the others landed, in both images
        ExternalTools.ok("qemu-io", "-f", "raw", "-c", "read -P 0x33 0 4k", "-c", "read -P 0x55 4k 4k",
                "-c", "read -P 0x01 8k 1016k", jimg.toString());
        ExternalTools.ok("qemu-img", "compare", "-f", "raw", "-F", "raw", qimg.toString(), jimg.toString());
    }

    @Test
    void setStateWithoutNewStateIsRefusedAsQemuDoes() throws Exception {
        Path img = dir.resolve("i.raw");
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "raw", img.toString(), "1M");
        try (DaemonProcess d = DaemonProcess.start(dir); QmpTestClient c = d.connect()) {
            // texts observed from qemu-system-x86_64 7.2 for the same arguments
            JsonNode e = c.executeError("blockdev-add", QmpTestClient.json("{\"driver\":\"blkdebug\","
                    + "\"node-name\":\"b1\",\"image\":{\"driver\":\"file\",\"filename\":\"" + img + "\"},"
                    + "\"set-state\":[{\"event\":\"read_aio\",\"state\":1}]}"));
            assertThat(e.get("desc").asText()).isEqualTo("Parameter 'set-state[0].new_state' is missing");
            e = c.executeError("blockdev-add", QmpTestClient.json("{\"driver\":\"blkdebug\","
                    + "\"node-name\":\"b1\",\"image\":{\"driver\":\"file\",\"filename\":\"" + img + "\"},"
                    + "\"inject-error\":[{\"event\":\"read_aio\",\"iotype\":\"bogus\"}]}"));
            assertThat(e.get("desc").asText()).isEqualTo("Parameter 'iotype' does not accept value 'bogus'");
            assertThat(c.executeOk("query-named-block-nodes")).isEmpty();
        }
    }
}
