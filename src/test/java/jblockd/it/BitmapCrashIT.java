package jblockd.it;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/**
 * Issue 13 point 5, beyond QEMU: a persistent bitmap survives a {@code kill -9} of the daemon
 * during random guest writes. The disk had a full backup and a fresh persistent bitmap; after
 * the crash QEMU still sees a valid image ({@code qemu-img check}, leaks allowed) with the bitmap
 * {@code in-use}, as its own crash would leave it; the restarted daemon loads the bitmap as
 * consistent (the write-intent record), and an incremental backup of it on top of the full one
 * restores the disk exactly. QEMU would have to make a new full backup here.
 */
class BitmapCrashIT {
    private static final Duration T = Duration.ofSeconds(60);

    @TempDir
    Path dir;

    @ParameterizedTest(name = "seed {0}")
    @ValueSource(longs = {1, 2, 3})
    void afterKillNineTheNextIncrementalBackupIsStillIncrementalAndCorrect(long seed) throws Exception {
        Peers.assumeTools("qemu-img", "qemu-io");
        SplittableRandom rnd = new SplittableRandom(seed);
        Path disk = dir.resolve("disk.qcow2");
        Path full = dir.resolve("full.qcow2");
        Path inc = dir.resolve("inc.qcow2");
        Peers.run("qemu-img", "create", "-q", "-f", "qcow2", disk.toString(), "128M");
        Peers.run("qemu-io", "-c", "write -P 0x11 0 128M", disk.toString());
        Peers.run("qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", disk.toString(), full.toString());

        Path d1 = Files.createDirectories(dir.resolve("d1"));
        DaemonProcess first = DaemonProcess.start(d1, "--nbd-server", "addr.type=unix,addr.path=" + d1.resolve("nbd.sock"));
        try (QmpTestClient c = first.connect()) {
            c.executeOk("blockdev-add", Map.of("driver", "qcow2", "node-name", "fmt",
                    "file", Map.of("driver", "file", "filename", disk.toString())));
            c.executeOk("block-dirty-bitmap-add", Map.of("node", "fmt", "name", "chk", "persistent", true,
                    "granularity", 4096));
            c.executeOk("block-export-add", Map.of("type", "nbd", "id", "g", "node-name", "fmt", "name", "vda",
                    "writable", true));
            List<String> argv = new ArrayList<>(List.of("qemu-io", "-f", "raw"));
            for (int i = 0; i < 40; i++) {
                long len = 4096L << rnd.nextInt(6);
                // within the first 32 MiB: two of the record's coarse regions (4096 granules
                // of 4 KiB = 16 MiB each) of the disk's eight
                long off = rnd.nextLong(0, (32L << 20) / len) * len;
                argv.addAll(List.of("-c", "write -P 0x" + Integer.toHexString(0x20 + rnd.nextInt(0xd0)) + " " + off
                        + " " + len));
            }
            argv.add("nbd+unix:///vda?socket=" + d1.resolve("nbd.sock"));
            Peers.run(argv.toArray(String[]::new));
            Peers.killNine(first);
        } finally {
            first.close();
        }
        // QEMU's view of the crashed image: valid, the bitmap in use (QEMU would call it inconsistent)
        Peers.checkQcow2(disk, true);
        JsonNode info = QmpTestClient.json(Peers.run("qemu-img", "info", "--output=json", disk.toString()));
        assertThat(info.at("/format-specific/data/bitmaps/0/name").asText()).isEqualTo("chk");
        assertThat(info.at("/format-specific/data/bitmaps/0/flags").toString()).contains("in-use");

        Path d2 = Files.createDirectories(dir.resolve("d2"));
        Peers.run("qemu-img", "create", "-q", "-f", "qcow2", "-b", full.toString(), "-F", "qcow2", inc.toString());
        try (DaemonProcess second = DaemonProcess.start(d2); QmpTestClient c = second.connect()) {
            c.executeOk("blockdev-add", Map.of("driver", "qcow2", "node-name", "fmt",
                    "file", Map.of("driver", "file", "filename", disk.toString())));
            JsonNode chk = null;
            for (JsonNode n : c.executeOk("query-named-block-nodes", Map.of("flat", true))) {
                if (n.get("node-name").asText().equals("fmt")) {
                    chk = n.get("dirty-bitmaps").get(0);
                }
            }
            assertThat(chk.get("name").asText()).isEqualTo("chk");
            assertThat(chk.has("inconsistent")).as("recovered: %s", chk).isFalse();
            long count = chk.get("count").asLong();
            assertThat(count).as("still incremental: at most the two regions written").isGreaterThan(0)
                    .isLessThanOrEqualTo(32L << 20);
            c.executeOk("blockdev-add", QmpTestClient.json("{\"driver\":\"qcow2\",\"node-name\":\"inc\","
                    + "\"file\":{\"driver\":\"file\",\"filename\":\"" + inc + "\"},\"backing\":null}"));
            c.executeOk("blockdev-backup", Map.of("job-id", "b", "device", "fmt", "target", "inc",
                    "sync", "incremental", "bitmap", "chk"));
            JsonNode done = c.waitEvent("BLOCK_JOB_COMPLETED", T).get("data");
            assertThat(done.has("error")).as("%s", done).isFalse();
            assertThat(done.get("len").asLong()).isEqualTo(count);
            c.waitEvent("JOB_STATUS_CHANGE", e -> e.at("/data/status").asText().equals("null"), T);
            c.executeOk("blockdev-del", Map.of("node-name", "inc"));
            c.executeOk("blockdev-del", Map.of("node-name", "fmt"));
        }
        Peers.run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", disk.toString(), inc.toString());
        Peers.checkQcow2(disk, true);
        Peers.checkQcow2(inc, false);
    }
}
