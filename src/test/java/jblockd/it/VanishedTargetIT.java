package jblockd.it;

import static jblockd.it.Peers.run;
import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

import com.fasterxml.jackson.databind.JsonNode;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/**
 * The target file (or its whole directory) is deleted while a job writes to it. On Linux the
 * open descriptor keeps working, so:
 * <ul>
 * <li>a backup completes (as in QEMU) into the unlinked file, which is gone once the job ends;
 *     nothing reappears at the path, and a new backup to the same path works;</li>
 * <li>a mirror reaches READY, but block-job-complete is refused (better than QEMU, which pivots
 *     the guest onto a file that vanishes at close); cancel leaves the device on its source.</li>
 * </ul>
 * Either way the source and the guest's I/O are undisturbed.
 */
class VanishedTargetIT {
    private static final Duration T = Duration.ofSeconds(30);

    @TempDir
    Path dir;
    Path nbd;
    String uri;

    @BeforeEach
    void tools() {
        Peers.assumeTools("qemu-img", "qemu-io");
        nbd = dir.resolve("nbd.sock");
        uri = "nbd+unix:///disk?socket=" + nbd;
    }

    private Path source() throws Exception {
        Path src = dir.resolve("src.qcow2");
        run("qemu-img", "create", "-q", "-f", "qcow2", src.toString(), "4M");
        run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 4M", src.toString());
        return src;
    }

    private DaemonProcess daemon(Path src) throws Exception {
        return DaemonProcess.start(dir, "--drive", "id=drive0,file=" + src + ",format=qcow2",
                "--nbd-server", "addr.type=unix,addr.path=" + nbd,
                "--export", "type=nbd,id=exp0,device=drive0,name=disk,writable=on");
    }

    private static void delete(Path tgt, boolean wholeDir) throws Exception {
        Files.delete(tgt);
        if (wholeDir) {
            Files.delete(tgt.getParent());
        }
    }

    @ParameterizedTest(name = "delete directory too: {0}")
    @ValueSource(booleans = {false, true})
    void backupCompletesIntoTheUnlinkedFileAndNothingElseIsDisturbed(boolean wholeDir) throws Exception {
        Path src = source();
        Path sub = Files.createDirectory(dir.resolve("out"));
        Path tgt = sub.resolve("tgt.qcow2");
        try (DaemonProcess d = daemon(src); QmpTestClient c = d.connect()) {
            c.executeOk("drive-backup", Map.of("device", "drive0", "target", tgt.toString(), "sync", "full",
                    "format", "qcow2", "speed", 1 << 20));
            delete(tgt, wholeDir);
            run("qemu-io", "-f", "raw", "-c", "write -P 0x22 1M 64k", uri);
            c.executeOk("block-job-set-speed", Map.of("device", "drive0", "speed", 0));
            JsonNode done = c.waitEvent("BLOCK_JOB_COMPLETED", T);
            assertThat(done.get("data").has("error")).as(done.toString()).isFalse();
            assertThat(Files.exists(tgt)).as("nothing reappears at the path").isFalse();
            // the guest and the source are undisturbed
            run("qemu-io", "-r", "-f", "raw", "-c", "read -P 0x22 1M 64k", "-c", "read -P 0x11 2M 2M", uri);
            // and the same path can take a new backup
            Files.createDirectories(sub);
            c.executeOk("drive-backup", Map.of("device", "drive0", "target", tgt.toString(), "sync", "full",
                    "format", "qcow2"));
            assertThat(c.waitEvent("BLOCK_JOB_COMPLETED", T).get("data").has("error")).isFalse();
            run("qemu-img", "compare", "-U", src.toString(), tgt.toString());
        }
        Peers.checkQcow2(src, false);
        Peers.checkQcow2(tgt, false);
    }

    @ParameterizedTest(name = "delete directory too: {0}")
    @CsvSource({"false", "true"})
    void mirrorRefusesToPivotOntoAnUnlinkedTarget(boolean wholeDir) throws Exception {
        Path src = source();
        Path sub = Files.createDirectory(dir.resolve("out"));
        Path tgt = sub.resolve("tgt.qcow2");
        try (DaemonProcess d = daemon(src); QmpTestClient c = d.connect()) {
            c.executeOk("drive-mirror", Map.of("device", "drive0", "target", tgt.toString(), "sync", "full",
                    "format", "qcow2"));
            c.waitEvent("BLOCK_JOB_READY", T);
            delete(tgt, wholeDir);
            run("qemu-io", "-f", "raw", "-c", "write -P 0x33 3M 64k", uri);
            JsonNode err = c.executeError("block-job-complete", Map.of("device", "drive0"));
            assertThat(err.get("class").asText()).isEqualTo("GenericError");
            assertThat(err.get("desc").asText()).contains("has been deleted");
            // still READY, still on the source; cancel ends it as a READY mirror does
            JsonNode job = c.executeOk("query-block-jobs").get(0);
            assertThat(job.get("status").asText()).isEqualTo("ready");
            c.executeOk("block-job-cancel", Map.of("device", "drive0"));
            c.waitEvent("BLOCK_JOB_COMPLETED", T);
            JsonNode blk = c.executeOk("query-block").get(0);
            assertThat(blk.at("/inserted/file").asText()).isEqualTo(src.toString());
            run("qemu-io", "-f", "raw", "-c", "write -P 0x44 0 64k", uri);
        }
        Peers.checkQcow2(src, false);
        run("qemu-io", "-r", "-f", "qcow2", "-c", "read -P 0x44 0 64k", "-c", "read -P 0x33 3M 64k",
                "-c", "read -P 0x11 1M 2M", src.toString());
    }
}
