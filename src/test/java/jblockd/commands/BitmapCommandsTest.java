package jblockd.commands;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.BlockNode;
import jblockd.daemon.Daemon;
import jblockd.qapi.ErrorClass;
import jblockd.qapi.QmpError;
import jblockd.testsupport.QmpTestClient;

/**
 * The bitmap commands in-process: QEMU 7.2's texts and check order (reference/bitmaps.md §2,
 * the same rows BitmapsQemuIT holds against QEMU itself), the query member, and the
 * deliberate differences (empty merge list, persistent on a read-only node).
 */
class BitmapCommandsTest {
    @TempDir
    Path dir;
    Daemon d;

    @BeforeEach
    void start() throws Exception {
        Path raw = dir.resolve("r.raw");
        Files.write(raw, new byte[1 << 20]);
        d = Daemon.builder().drive("id=drive0,file=" + raw + ",format=raw,node-name=rawfmt").build();
        d.start();
        ok("blockdev-add", "{\"driver\":\"null-co\",\"node-name\":\"n\",\"size\":1049088}");
        ok("blockdev-add", "{\"driver\":\"null-co\",\"node-name\":\"m\",\"size\":2097152}");
    }

    @AfterEach
    void stop() {
        d.close();
    }

    private JsonNode ok(String cmd, String args) throws QmpError {
        return d.executeCommand(cmd, args == null ? null : QmpTestClient.json(args));
    }

    private String err(String cmd, String args) {
        try {
            d.executeCommand(cmd, QmpTestClient.json(args));
        } catch (QmpError e) {
            assertThat(e.errorClass()).isEqualTo(ErrorClass.GENERIC_ERROR);
            return e.getMessage();
        }
        throw new AssertionError(cmd + " " + args + " succeeded");
    }

    private JsonNode bitmapsOf(String node) throws QmpError {
        for (JsonNode n : ok("query-named-block-nodes", null)) {
            if (n.path("node-name").asText().equals(node)) {
                return n.get("dirty-bitmaps");
            }
        }
        throw new AssertionError("no node " + node);
    }

    private BlockNode node(String name) {
        return d.graph().node(name).orElseThrow();
    }

    @Test
    void addArgumentErrorsInQemusOrder() {
        assertThat(err("block-dirty-bitmap-add", "{\"node\":\"nosuch\",\"name\":\"\"}"))
                .isEqualTo("Bitmap name cannot be empty");
        assertThat(err("block-dirty-bitmap-add", "{\"node\":\"nosuch\",\"name\":\"b\",\"granularity\":3}"))
                .isEqualTo("Cannot find device='nosuch' nor node-name='nosuch'");
        for (long g : new long[] {0, 3, 256, 511, 4294967295L, 65537}) {
            assertThat(err("block-dirty-bitmap-add", "{\"node\":\"n\",\"name\":\"b\",\"granularity\":" + g + "}"))
                    .isEqualTo("Granularity must be power of 2 and at least 512");
        }
        assertThat(err("block-dirty-bitmap-add", "{\"node\":\"n\",\"name\":\"b\",\"granularity\":-1}"))
                .isEqualTo("Parameter 'granularity' expects uint32_t");
        assertThat(err("block-dirty-bitmap-add", "{\"node\":\"n\",\"name\":\"b\",\"granularity\":4294967296}"))
                .isEqualTo("Parameter 'granularity' expects uint32_t");
        assertThat(err("block-dirty-bitmap-add", "{\"node\":\"n\",\"name\":\"b\",\"autoload\":true}"))
                .isEqualTo("Parameter 'autoload' is unexpected");
        assertThat(err("block-dirty-bitmap-add", "{\"node\":\"n\"}")).isEqualTo("Parameter 'name' is missing");
        assertThat(err("block-dirty-bitmap-add", "{\"node\":\"n\",\"name\":\"b\",\"persistent\":true,\"granularity\":3}"))
                .isEqualTo("Granularity must be power of 2 and at least 512");
        assertThat(node("n").bitmaps().isEmpty()).isTrue();
    }

    @Test
    void addNamesAndPersistenceRows() throws Exception {
        ok("block-dirty-bitmap-add", "{\"node\":\"n\",\"name\":\"b0\"}");
        assertThat(err("block-dirty-bitmap-add", "{\"node\":\"n\",\"name\":\"b0\",\"granularity\":512}"))
                .isEqualTo("Bitmap already exists: b0");
        ok("block-dirty-bitmap-add", "{\"node\":\"n\",\"name\":\"" + "x".repeat(1023) + "\"}");
        assertThat(err("block-dirty-bitmap-add", "{\"node\":\"n\",\"name\":\"" + "y".repeat(1024) + "\"}"))
                .isEqualTo("Bitmap name too long: " + "y".repeat(1024));
        ok("block-dirty-bitmap-add", "{\"node\":\"n\",\"name\":\"g\",\"granularity\":2147483648}");
        // the node's name, or the device's when the node is a device's root
        assertThat(err("block-dirty-bitmap-add", "{\"node\":\"n\",\"name\":\"p\",\"persistent\":true}"))
                .isEqualTo("Can't store persistent bitmaps to n: Operation not supported");
        assertThat(err("block-dirty-bitmap-add", "{\"node\":\"rawfmt\",\"name\":\"p\",\"persistent\":true}"))
                .isEqualTo("Can't store persistent bitmaps to drive0: Operation not supported");
        // a persistent add checks the store before the name (QEMU's order)
        assertThat(err("block-dirty-bitmap-add", "{\"node\":\"n\",\"name\":\"b0\",\"persistent\":true}"))
                .isEqualTo("Can't store persistent bitmaps to n: Operation not supported");
        // the same name on another node
        ok("block-dirty-bitmap-add", "{\"node\":\"m\",\"name\":\"b0\"}");
        // a device name is its root node
        ok("block-dirty-bitmap-add", "{\"node\":\"drive0\",\"name\":\"d\"}");
        assertThat(err("block-dirty-bitmap-add", "{\"node\":\"rawfmt\",\"name\":\"d\"}"))
                .isEqualTo("Bitmap already exists: d");
    }

    @Test
    void defaultGranularityIsTheClusterSizeClampedOr64KiB() throws Exception {
        ok("block-dirty-bitmap-add", "{\"node\":\"n\",\"name\":\"b0\"}");
        ok("block-dirty-bitmap-add", "{\"node\":\"drive0\",\"name\":\"b0\"}");
        assertThat(bitmapsOf("n").get(0).get("granularity").asLong()).isEqualTo(65536);
        assertThat(bitmapsOf("rawfmt").get(0).get("granularity").asLong()).isEqualTo(65536);
    }

    @Test
    void lookupErrorsOfTheOtherCommands() throws Exception {
        for (String c : List.of("remove", "clear", "enable", "disable")) {
            assertThat(err("block-dirty-bitmap-" + c, "{\"node\":\"nosuch\",\"name\":\"x\"}"))
                    .isEqualTo("Node 'nosuch' not found");
            assertThat(err("block-dirty-bitmap-" + c, "{\"node\":\"n\",\"name\":\"x\"}"))
                    .isEqualTo("Dirty bitmap 'x' not found");
        }
        assertThat(err("x-debug-block-dirty-bitmap-sha256", "{\"node\":\"n\",\"name\":\"x\"}"))
                .isEqualTo("Dirty bitmap 'x' not found");
        ok("block-dirty-bitmap-add", "{\"node\":\"n\",\"name\":\"b0\"}");
        assertThat(err("block-dirty-bitmap-merge", "{\"node\":\"nosuch\",\"target\":\"b0\",\"bitmaps\":[\"b0\"]}"))
                .isEqualTo("Node 'nosuch' not found");
        assertThat(err("block-dirty-bitmap-merge", "{\"node\":\"n\",\"target\":\"nob\",\"bitmaps\":[\"nob2\"]}"))
                .isEqualTo("Dirty bitmap 'nob' not found");
        assertThat(err("block-dirty-bitmap-merge", "{\"node\":\"n\",\"target\":\"b0\",\"bitmaps\":[\"nob2\"]}"))
                .isEqualTo("Dirty bitmap 'nob2' not found");
        assertThat(err("block-dirty-bitmap-merge",
                "{\"node\":\"n\",\"target\":\"b0\",\"bitmaps\":[{\"node\":\"zz\",\"name\":\"x\"}]}"))
                .isEqualTo("Node 'zz' not found");
        assertThat(err("block-dirty-bitmap-merge", "{\"node\":\"n\",\"target\":\"b0\",\"bitmaps\":[{\"node\":\"n\"}]}"))
                .isEqualTo("Parameter 'bitmaps[0].name' is missing");
        assertThat(err("block-dirty-bitmap-merge", "{\"node\":\"n\",\"target\":\"b0\",\"bitmaps\":[1]}"))
                .isEqualTo("Invalid parameter type for 'null', expected: BlockDirtyBitmapOrStr");
        assertThat(err("block-dirty-bitmap-merge", "{\"node\":\"n\",\"target\":\"b0\",\"bitmaps\":\"b1\"}"))
                .isEqualTo("Invalid parameter type for 'bitmaps', expected: array");
    }

    @Test
    void mergeChecksEachSourceInTurnAndChangesNothingOnARefusal() throws Exception {
        ok("block-dirty-bitmap-add", "{\"node\":\"n\",\"name\":\"t\"}");
        ok("block-dirty-bitmap-add", "{\"node\":\"n\",\"name\":\"s\",\"granularity\":4096}");
        ok("block-dirty-bitmap-add", "{\"node\":\"m\",\"name\":\"big\"}");
        node("n").write(0, ByteBuffer.allocate(1), false);
        ok("block-dirty-bitmap-disable", "{\"node\":\"n\",\"name\":\"t\"}");
        ok("block-dirty-bitmap-clear", "{\"node\":\"n\",\"name\":\"t\"}");
        String before = ok("x-debug-block-dirty-bitmap-sha256", "{\"node\":\"n\",\"name\":\"t\"}").get("sha256").asText();
        assertThat(err("block-dirty-bitmap-merge",
                "{\"node\":\"n\",\"target\":\"t\",\"bitmaps\":[\"s\",{\"node\":\"m\",\"name\":\"big\"}]}"))
                .isEqualTo("Bitmaps are of different sizes (destination size is 1049088, source size is 2097152)"
                        + " and can't be merged");
        assertThat(err("block-dirty-bitmap-merge", "{\"node\":\"n\",\"target\":\"t\",\"bitmaps\":[\"s\",\"nosuch\"]}"))
                .isEqualTo("Dirty bitmap 'nosuch' not found");
        assertThat(ok("x-debug-block-dirty-bitmap-sha256", "{\"node\":\"n\",\"name\":\"t\"}").get("sha256").asText())
                .isEqualTo(before);
        // a disabled target, a finer source, and the target itself among the sources
        ok("block-dirty-bitmap-merge", "{\"node\":\"n\",\"target\":\"t\",\"bitmaps\":[\"s\",\"t\"]}");
        assertThat(bitmapsOf("n").get(1).get("count").asLong()).isEqualTo(65536);
        // across nodes of the same size, by device name
        ok("block-dirty-bitmap-add", "{\"node\":\"n\",\"name\":\"other\"}");
        ok("block-dirty-bitmap-merge",
                "{\"node\":\"n\",\"target\":\"other\",\"bitmaps\":[{\"node\":\"n\",\"name\":\"t\"}]}");
        assertThat(bitmapsOf("n").get(0).get("count").asLong()).isEqualTo(65536);
    }

    @Test
    void mergeWithAnEmptyListIsRefusedInsteadOfCrashingAsQemu() throws Exception {
        ok("block-dirty-bitmap-add", "{\"node\":\"n\",\"name\":\"t\"}");
        assertThat(err("block-dirty-bitmap-merge", "{\"node\":\"n\",\"target\":\"t\",\"bitmaps\":[]}"))
                .isEqualTo("'bitmaps' must not be empty");
    }

    @Test
    void theQueryMemberIsOmittedWithoutBitmapsAndShownInBothQueries() throws Exception {
        assertThat(bitmapsOf("n")).isNull();
        assertThat(ok("query-block", null).get(0).get("inserted").has("dirty-bitmaps")).isFalse();
        ok("block-dirty-bitmap-add", "{\"node\":\"drive0\",\"name\":\"b0\"}");
        ok("block-dirty-bitmap-add", "{\"node\":\"drive0\",\"name\":\"b1\",\"granularity\":512,\"disabled\":true}");
        node("rawfmt").write(65536, ByteBuffer.allocate(4096), false);
        JsonNode inserted = ok("query-block", null).get(0).get("inserted").get("dirty-bitmaps");
        assertThat(inserted.toString()).isEqualTo("[{\"name\":\"b1\",\"recording\":false,\"persistent\":false,"
                + "\"busy\":false,\"granularity\":512,\"count\":0},{\"name\":\"b0\",\"recording\":true,"
                + "\"persistent\":false,\"busy\":false,\"granularity\":65536,\"count\":65536}]");
        assertThat(bitmapsOf("rawfmt")).isEqualTo(inserted);
        assertThat(QmpTestClient.memberNames(inserted.get(0)))
                .containsExactly("name", "recording", "persistent", "busy", "granularity", "count");
        // the file node below sees the raw node's write too (bitmaps belong to nodes)
        ok("block-dirty-bitmap-remove", "{\"node\":\"drive0\",\"name\":\"b0\"}");
        ok("block-dirty-bitmap-remove", "{\"node\":\"rawfmt\",\"name\":\"b1\"}");
        assertThat(ok("query-block", null).get(0).get("inserted").has("dirty-bitmaps")).isFalse();
    }

    @Test
    void busyBitmapsAreRefusedByEveryCommandButTheHash() throws Exception {
        ok("block-dirty-bitmap-add", "{\"node\":\"n\",\"name\":\"b0\"}");
        ok("block-dirty-bitmap-add", "{\"node\":\"n\",\"name\":\"t\"}");
        var b0 = node("n").bitmaps().find("b0").orElseThrow();
        node("n").bitmaps().freeze(b0);
        String busy = "Bitmap 'b0' is currently in use by another operation and cannot be used";
        for (String c : List.of("remove", "clear", "enable", "disable")) {
            assertThat(err("block-dirty-bitmap-" + c, "{\"node\":\"n\",\"name\":\"b0\"}")).isEqualTo(busy);
        }
        assertThat(err("block-dirty-bitmap-merge", "{\"node\":\"n\",\"target\":\"b0\",\"bitmaps\":[\"t\"]}"))
                .isEqualTo(busy);
        assertThat(err("block-dirty-bitmap-merge", "{\"node\":\"n\",\"target\":\"t\",\"bitmaps\":[\"b0\"]}"))
                .isEqualTo(busy);
        ok("x-debug-block-dirty-bitmap-sha256", "{\"node\":\"n\",\"name\":\"b0\"}");
        JsonNode list = bitmapsOf("n");
        assertThat(list.get(0).has("name")).as("the successor is anonymous").isFalse();
        assertThat(list.get(0).get("recording").asBoolean()).isTrue();
        assertThat(list.get(2).get("busy").asBoolean()).isTrue();
        assertThat(list.get(2).get("recording").asBoolean()).isTrue();
    }

    @Test
    void enableAndDisableAreIdempotentAndSha256ChangesWithTheBits() throws Exception {
        ok("block-dirty-bitmap-add", "{\"node\":\"n\",\"name\":\"b\"}");
        ok("block-dirty-bitmap-enable", "{\"node\":\"n\",\"name\":\"b\"}");
        ok("block-dirty-bitmap-disable", "{\"node\":\"n\",\"name\":\"b\"}");
        ok("block-dirty-bitmap-disable", "{\"node\":\"n\",\"name\":\"b\"}");
        assertThat(ok("x-debug-block-dirty-bitmap-sha256", "{\"node\":\"n\",\"name\":\"b\"}").toString())
                .isEqualTo("{\"sha256\":\"af5570f5a1810b7af78caf4bc70a660f0df51e42baf91d4de5b2328de0e83dfc\"}");
        node("n").write(0, ByteBuffer.allocate(1), false);
        assertThat(bitmapsOf("n").get(0).get("count").asLong()).as("disabled").isZero();
    }
}
