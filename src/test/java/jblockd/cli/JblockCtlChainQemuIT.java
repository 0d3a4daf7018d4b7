package jblockd.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Path;
import java.util.List;
import jblockd.client.QemuPeer;
import jblockd.client.TestTools;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code jblockctl stream} and {@code commit} on a backing chain (raw base, qcow2 overlay with
 * its own data) in real QEMU 7.2; the images are checked with qemu-img afterwards.
 */
class JblockCtlChainQemuIT {
    @TempDir
    Path dir;
    Path base;
    Path overlay;
    Path expected;
    QemuPeer qemu;

    @BeforeEach
    void chain() throws Exception {
        assumeTrue(QemuPeer.available() && TestTools.onPath("qemu-img") && TestTools.onPath("qemu-io"));
        base = TestTools.patternedRaw(dir.resolve("base.img"), 4L << 20);
        overlay = dir.resolve("overlay.qcow2");
        assertThat(TestTools.run(List.of("qemu-img", "create", "-q", "-f", "qcow2", "-b", base.toString(), "-F", "raw",
                overlay.toString()), null)).isZero();
        assertThat(TestTools.run(List.of("qemu-io", "-f", "qcow2", "-c", "write -P 0xee 1M 512K", overlay.toString()),
                null)).isZero();
        // what the guest sees: the chain flattened
        expected = dir.resolve("expected.img");
        assertThat(TestTools.run(List.of("qemu-img", "convert", "-O", "raw", overlay.toString(), expected.toString()),
                null)).isZero();
        qemu = QemuPeer.start(dir, overlay, "qcow2");
    }

    @AfterEach
    void stop() {
        if (qemu != null) {
            qemu.close();
        }
    }

    @Test
    void streamPullsTheBaseIntoTheOverlayAndDropsTheBackingLink() throws Exception {
        CliRunner.Result r = CliRunner.run("--socket", qemu.socket().toString(), "stream", "drive0");
        assertThat(r.code()).as(r.err()).isZero();
        assertThat(r.out()).contains("drive0: stream completed");
        qemu.close();
        StringBuilder info = new StringBuilder();
        TestTools.run(List.of("qemu-img", "info", overlay.toString()), info);
        assertThat(info.toString()).doesNotContain("backing file");
        assertThat(TestTools.qemuImgCompare(expected, overlay)).isZero();
    }

    @Test
    void activeCommitReachesReadyAndCompletesIntoTheBase() throws Exception {
        CliRunner.Result r = CliRunner.run("--socket", qemu.socket().toString(), "commit", "drive0", "--complete",
                "--json");
        assertThat(r.code()).as(r.err()).isZero();
        assertThat(r.out()).contains("\"kind\":\"note\"").contains("\"outcome\":\"completed\"")
                .contains("\"type\":\"commit\"");
        qemu.close();
        assertThat(TestTools.qemuImgCompare(expected, base)).isZero();
    }
}
