package jblockd.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeFalse;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import jblockd.client.TestTools;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code jblockctl backup --demo} and {@code --image}: an embedded daemon, the backup job, the
 * progress display and the verification, in one process; targets are checked with qemu-img.
 */
class OneShotBackupIT {
    @TempDir
    Path dir;

    /** Runs jblockctl with {@code dir} as working directory. */
    CliRunner.Result run(String... args) throws Exception {
        ProcessBuilder pb = new ProcessBuilder(CliRunner.command(List.of(args))).directory(dir.toFile());
        pb.environment().remove(JblockCtl.SOCKET_ENV);
        Process p = pb.start();
        p.getOutputStream().close();
        CompletableFuture<String> out = CliRunner.drain(p.getInputStream());
        CompletableFuture<String> err = CliRunner.drain(p.getErrorStream());
        CliRunner.Result r = CliRunner.finish(p, out, err, 120);
        assumeFalse(r.err().contains("The command drive-backup has not been found"), "no job engine in this build");
        return r;
    }

    @Test
    void demoCreatesASampleBacksItUpAndVerifies() throws Exception {
        CliRunner.Result r = run("backup", "--demo");
        assertThat(r.code()).as("stdout:\n%s\nstderr:\n%s", r.out(), r.err()).isZero();
        assertThat(r.out()).contains("demo: created jblockd-demo/source.img (64.0 MiB raw")
                .contains("backup limited to 32.0 MiB/s (--speed 0: unlimited)")
                .contains("drive0: backup completed, 64.0 MiB").contains("verified: ");
        // a job in waiting/pending has done its work: its line must not show a stale offset
        assertThat(r.out().lines().filter(l -> l.contains(" waiting") || l.contains(" pending")))
                .allSatisfy(l -> assertThat(l).contains("100.0%"));
        Path source = dir.resolve("jblockd-demo/source.img");
        Path target = dir.resolve("jblockd-demo/backup.img");
        assertThat(TestTools.qemuImgCompare(source, target)).isZero();
        // a second run starts over and succeeds again
        assertThat(run("backup", "--demo", "--speed", "0").code()).isZero();
    }

    @Test
    void imageBackupToQcow2WithJsonOutputIsVerifiedAndPassesQemuImgCheck() throws Exception {
        assumeTrue(TestTools.onPath("qemu-img") && TestTools.onPath("qemu-io"));
        Path source = dir.resolve("disk.qcow2");
        assertThat(TestTools.run(List.of("qemu-img", "create", "-q", "-f", "qcow2", source.toString(), "16M"), null))
                .isZero();
        assertThat(TestTools.run(List.of("qemu-io", "-f", "qcow2", "-c", "write -P 0x61 0 3M",
                "-c", "write -P 0x62 9M 1M", source.toString()), null)).isZero();
        Path target = dir.resolve("out.qcow2");
        CliRunner.Result r = run("backup", "--image", source.toString(), target.toString(), "--format", "qcow2",
                "--json");
        assertThat(r.code()).as(r.err()).isZero();
        List<String> lines = r.outLines();
        ObjectMapper json = new ObjectMapper();
        JsonNode result = json.readTree(lines.get(lines.size() - 2));
        assertThat(result.path("kind").asText()).isEqualTo("result");
        assertThat(result.path("outcome").asText()).isEqualTo("completed");
        JsonNode verify = json.readTree(lines.get(lines.size() - 1));
        assertThat(verify.path("kind").asText()).isEqualTo("verify");
        assertThat(verify.path("identical").asBoolean()).isTrue();
        assertThat(TestTools.qemuImgCompare(source, target)).isZero();
        assertThat(TestTools.run(List.of("qemu-img", "check", "-q", target.toString()), null)).isZero();
    }

    @Test
    void anExistingTargetOrAMissingSourceIsAUsageError() throws Exception {
        Path source = dir.resolve("s.img");
        SampleImage.create(source, 1 << 20);
        Path target = dir.resolve("t.img");
        Files.writeString(target, "keep me");
        CliRunner.Result r = run("backup", "--image", source.toString(), target.toString());
        assertThat(r.code()).isEqualTo(2);
        assertThat(r.err()).isEqualTo("jblockctl: " + target + " exists: remove it, or give --mode existing to write into it\n");
        assertThat(Files.readString(target)).isEqualTo("keep me");
        CliRunner.Result missing = run("backup", "--image", dir.resolve("nope.img").toString(), target.toString());
        assertThat(missing.code()).isEqualTo(2);
        assertThat(missing.err()).contains("cannot open ");
        assertThat(run("backup", "--demo", "--detach").code()).isEqualTo(2);
    }
}
