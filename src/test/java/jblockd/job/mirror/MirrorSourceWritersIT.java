package jblockd.job.mirror;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.BothDaemons;
import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.QmpTestClient;

/**
 * A mirror tracks every write that reaches its source node, whoever sends it (QEMU: a dirty
 * bitmap on the source node), not only the writes of the device it was started on. Here a
 * writable export is added on the source's node name after READY and the guest writes through
 * it; after block-job-complete the target must hold that write. Same exchange against
 * qemu-storage-daemon 7.2 (which gets it right) when installed.
 */
class MirrorSourceWritersIT {
    private static final Duration T = Duration.ofSeconds(60);

    @TempDir
    Path dir;

    @Test
    void aWriteThroughAnExportAddedAfterReadyReachesTheTarget() throws Exception {
        assumeTrue(ExternalTools.present("qemu-img") && ExternalTools.present("qemu-io"));
        BothDaemons.run(dir, MirrorSourceWritersIT::exchange);
    }

    private static void exchange(QmpTestClient c, Path d) throws Exception {
        Path src = d.resolve("src.qcow2");
        Path tgt = d.resolve("t.qcow2");
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", src.toString(), "16M");
        ExternalTools.ok("qemu-io", "-c", "write -P 0x11 0 16M", src.toString());
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", tgt.toString(), "16M");
        c.executeOk("blockdev-add", Map.of("driver", "qcow2", "node-name", "src",
                "file", Map.of("driver", "file", "filename", src.toString())));
        c.executeOk("blockdev-add", Map.of("driver", "qcow2", "node-name", "t",
                "file", Map.of("driver", "file", "filename", tgt.toString())));
        c.executeOk("blockdev-mirror", Map.of("job-id", "m", "device", "src", "target", "t", "sync", "full"));
        c.waitEvent("BLOCK_JOB_READY", T);
        c.executeOk("block-export-add", Map.of("type", "nbd", "id", "e", "node-name", "src", "name", "src",
                "writable", true));
        String out = ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 0x22 8M 1M",
                "nbd+unix:///src?socket=" + d.resolve("nbd.sock"));
        assertThat(out).doesNotContain("failed");
        c.executeOk("block-export-del", Map.of("id", "e"));
        c.waitEvent("BLOCK_EXPORT_DELETED", T);
        c.executeOk("block-job-complete", Map.of("device", "m"));
        assertThat(c.waitEvent("BLOCK_JOB_COMPLETED", T).get("data").has("error")).isFalse();
        c.waitEvent("JOB_STATUS_CHANGE", e -> e.at("/data/status").asText().equals("null"), T);
        c.executeOk("blockdev-del", Map.of("node-name", "src"));
        c.executeOk("blockdev-del", Map.of("node-name", "t"));
        ExternalTools.ok("qemu-io", "-r", "-c", "read -P 0x22 8M 1M", "-c", "read -P 0x11 0 8M", tgt.toString());
        ExternalTools.ok("qemu-img", "compare", src.toString(), tgt.toString());
    }
}
