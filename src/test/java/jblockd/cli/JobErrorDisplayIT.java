package jblockd.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import jblockd.client.JblockdPeer;
import jblockd.client.QemuPeer;
import jblockd.client.QmpClient;
import jblockd.client.QmpPeer;
import jblockd.client.TestTools;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A backup with {@code --on-source-error stop} over a blkdebug source that fails one read:
 * jblockctl shows the job paused with io-status {@code failed} and the error, and finishes it
 * after {@code jblockctl resume} (seed 000). Against QEMU 7.2 and jblockd.
 */
class JobErrorDisplayIT {
    @TempDir
    Path dir;

    @Test
    void qemu() throws Exception {
        assumeTrue(QemuPeer.available());
        run(true);
    }

    @Test
    void jblockd() throws Exception {
        run(false);
    }

    private void run(boolean qemu) throws Exception {
        Path image = TestTools.patternedRaw(dir.resolve("source.img"), 4L << 20);
        Path conf = dir.resolve("blkdebug.conf");
        Files.writeString(conf, "[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\nsector = \"2048\"\nonce = \"on\"\n");
        Path spec = Path.of("blkdebug:" + conf + ":" + image);
        try (QmpPeer peer = qemu ? QemuPeer.start(dir, spec, "raw") : JblockdPeer.start(dir, spec, "raw")) {
            Path target = dir.resolve("target.img");
            Process p = CliRunner.start(Map.of(), "--socket", peer.secondSocket().toString(), "backup", "drive0",
                    target.toString(), "--format", "raw", "--on-source-error", "stop", "--json");
            CompletableFuture<String> out = CliRunner.drain(p.getInputStream());
            CompletableFuture<String> err = CliRunner.drain(p.getErrorStream());
            try (QmpClient qmp = QmpClient.connectUnix(peer.socket())) {
                long deadline = System.nanoTime() + 30_000_000_000L;
                while (qmp.jobs().queryBlockJobs().stream().noneMatch(j -> j.paused() && j.ioStatus() != null
                        && j.ioStatus().wire().equals("failed"))) {
                    assertThat(System.nanoTime()).as("job never stopped on the error").isLessThan(deadline);
                    Thread.sleep(50);
                }
                Thread.sleep(1200); // let jblockctl poll and print the stopped state
                qmp.jobs().blockJobResume("drive0");
            }
            CliRunner.Result r = CliRunner.finish(p, out, err, 60);
            assertThat(r.code()).as(r.err()).isZero();
            ObjectMapper json = new ObjectMapper();
            List<JsonNode> lines = new ArrayList<>();
            for (String l : r.outLines()) {
                lines.add(json.readTree(l));
            }
            assertThat(lines).anySatisfy(n -> {
                assertThat(n.path("kind").asText()).isEqualTo("progress");
                assertThat(n.path("paused").asBoolean()).isTrue();
                assertThat(n.path("io-status").asText()).isEqualTo("failed");
                assertThat(n.path("error").asText()).isEqualTo("read error, action stop");
            });
            JsonNode last = lines.get(lines.size() - 1);
            assertThat(last.path("outcome").asText()).isEqualTo("completed");
            assertThat(TestTools.qemuImgCompare(image, target)).isZero();
        }
    }
}
