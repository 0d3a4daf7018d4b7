package jblockd.job.mirror;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.BothDaemons;
import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.QmpTestClient;

/**
 * Commit of an intermediate layer into a base that blockdev-add opened read-only (as every
 * backing child opened inline is). QEMU reopens the base node itself read-write for the job and
 * read-only again when the job is gone, so a reader of the {@code base} node (here an NBD export
 * that read, and so cached, the base's metadata before the job) sees the committed data. jblockd
 * once wrote through a second opening of the image, and the export kept serving the old
 * clusters. Same exchange against qemu-storage-daemon 7.2 when installed.
 */
class CommitIntoReadOnlyBaseIT {
    private static final Duration T = Duration.ofSeconds(60);

    @TempDir
    Path dir;

    @Test
    void theBaseNodeItselfSeesTheCommittedData() throws Exception {
        assumeTrue(ExternalTools.present("qemu-img") && ExternalTools.present("qemu-io"));
        BothDaemons.run(dir, CommitIntoReadOnlyBaseIT::exchange);
    }

    private static boolean readOnly(QmpTestClient c, String node) throws Exception {
        for (JsonNode n : c.executeOk("query-named-block-nodes")) {
            if (n.path("node-name").asText().equals(node)) {
                return n.path("ro").asBoolean();
            }
        }
        throw new AssertionError("no node " + node);
    }

    /** qemu-io over the export, every pattern verified. */
    private static void read(Path d, String export, String... commands) throws Exception {
        List<String> args = new ArrayList<>(List.of("qemu-io", "-r", "-f", "raw"));
        for (String command : commands) {
            args.addAll(List.of("-c", command));
        }
        args.add("nbd+unix:///" + export + "?socket=" + d.resolve("nbd.sock"));
        String out = ExternalTools.ok(args.toArray(String[]::new));
        assertThat(out).as(String.join("; ", commands)).doesNotContain("Pattern verification failed");
    }

    private static void exchange(QmpTestClient c, Path d) throws Exception {
        Path base = d.resolve("base.qcow2");
        Path mid = d.resolve("mid.qcow2");
        Path top = d.resolve("top.qcow2");
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", base.toString(), "4M");
        ExternalTools.ok("qemu-io", "-c", "write -P 1 2M 2M", base.toString());
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", "-b", base.toString(), "-F", "qcow2", mid.toString());
        ExternalTools.ok("qemu-io", "-c", "write -P 2 0 1M", mid.toString());
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", "-b", mid.toString(), "-F", "qcow2", top.toString());
        c.executeOk("blockdev-add", Map.of("driver", "qcow2", "node-name", "top",
                "file", Map.of("driver", "file", "filename", top.toString()),
                "backing", Map.of("driver", "qcow2", "node-name", "mid",
                        "file", Map.of("driver", "file", "node-name", "midf", "filename", mid.toString()),
                        "backing", Map.of("driver", "qcow2", "node-name", "base",
                                "file", Map.of("driver", "file", "filename", base.toString())))));
        assertThat(readOnly(c, "base")).as("an inline backing child is read-only").isTrue();
        c.executeOk("block-export-add", Map.of("type", "nbd", "id", "eb", "node-name", "base", "name", "base"));
        c.executeOk("block-export-add", Map.of("type", "nbd", "id", "et", "node-name", "top", "name", "top"));
        // an export of the committed layer itself: it reads through commit_top during the job
        // and from base after it (bdrv_drop_intermediate() moves every parent of the filter)
        c.executeOk("block-export-add", Map.of("type", "nbd", "id", "em", "node-name", "mid", "name", "mid"));
        // the export reads the base before the job: its L2 table for offset 0 is cached unallocated
        read(d, "base", "read -P 0 0 64k", "read -P 1 2M 64k");

        c.executeOk("block-commit", Map.of("job-id", "c1", "device", "top", "top-node", "mid", "base-node", "base"));
        JsonNode done = c.waitEvent("BLOCK_JOB_COMPLETED", T);
        assertThat(done.get("data").has("error")).as(done.toString()).isFalse();
        c.waitEvent("JOB_STATUS_CHANGE", e -> e.at("/data/status").asText().equals("null"), T);

        read(d, "base", "read -P 2 0 1M", "read -P 0 1M 1M", "read -P 1 2M 2M");
        read(d, "top", "read -P 2 0 1M", "read -P 0 1M 1M", "read -P 1 2M 2M");
        read(d, "mid", "read -P 2 0 1M", "read -P 0 1M 1M", "read -P 1 2M 2M");
        assertThat(readOnly(c, "base")).as("commit_clean() makes the base read-only again").isTrue();
        for (String id : new String[] {"eb", "et", "em"}) {
            c.executeOk("block-export-del", Map.of("id", id));
            c.waitEvent("BLOCK_EXPORT_DELETED", T);
        }
        assertThat(c.executeOk("query-named-block-nodes").findValuesAsText("node-name")).doesNotContain("mid");
        c.executeOk("blockdev-del", Map.of("node-name", "top"));
        ExternalTools.ok("qemu-img", "check", base.toString());
        ExternalTools.ok("qemu-io", "-r", "-c", "read -P 2 0 1M", "-c", "read -P 1 2M 2M", base.toString());
        assertThat(ExternalTools.ok("qemu-img", "info", top.toString())).contains("backing file: " + base);
    }
}
