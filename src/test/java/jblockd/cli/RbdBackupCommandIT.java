package jblockd.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.CephCluster;
import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.NbdPeer;
import jblockd.testsupport.QmpTestClient;

/**
 * {@code jblockctl backup} of an RBD device (docs/rbd.md): the point-in-time backup from an RBD
 * snapshot and the snapshot-diff incrementals, while a guest writes random data through an NBD
 * export of the device. Every backup is compared, through QEMU's own rbd driver, with the RBD
 * snapshot it was read from (the disk at that instant), and the chain's snapshots are pruned
 * to the newest one.
 */
class RbdBackupCommandIT {
    static CephCluster ceph;

    @TempDir
    Path dir;

    @BeforeAll
    static void cluster() throws Exception {
        ExternalTools.assumeTools("qemu-img", "qemu-io");
        ceph = CephCluster.start();
    }

    @AfterAll
    static void stop() throws Exception {
        if (ceph != null) {
            ceph.close();
        }
    }


    private static String at(String image, String snapshot) {
        return ceph.rbdName(image).replace(image + ":", image + "@" + snapshot + ":");
    }

    /** A guest: batches of random 4k..256k writes of random patterns (and zeroes) through the export until stopped. */
    private static CompletableFuture<Integer> guest(String nbd, long seed, long size, AtomicBoolean stop) {
        return CompletableFuture.supplyAsync(() -> {
            Random r = new Random(seed);
            int writes = 0;
            try {
                while (!stop.get()) {
                    List<String> cmd = new ArrayList<>(List.of("qemu-io", "-f", "raw"));
                    for (int i = 0; i < 16; i++) {
                        long len = (1 + r.nextInt(64)) * 4096L;
                        long off = (r.nextLong(size - len) / 4096) * 4096;
                        cmd.add("-c");
                        // now and then zeroes: a restore must not show the older backup through them
                        cmd.add(i % 5 == 4 ? "write -z " + off + " " + len
                                : "write -P 0x" + Integer.toHexString(1 + r.nextInt(255)) + " " + off + " " + len);
                    }
                    cmd.add(nbd);
                    ExternalTools.ok(cmd.toArray(String[]::new));
                    writes += 16;
                }
                return writes;
            } catch (Exception e) {
                throw new IllegalStateException(e);
            }
        });
    }

    private static String compare(String a, String fmtB, String b) throws Exception {
        return ExternalTools.ok("qemu-img", "compare", "-U", "-f", "raw", "-F", fmtB, a, b).strip();
    }

    @Test
    void snapshotBackupsUnderGuestWritesRestoreEveryPoint() throws Exception {
        String img = "bk-chain";
        long size = 64L << 20;
        ceph.createImage(img, size);
        ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 8M", "-c", "write -P 0x33 40M 4M",
                ceph.rbdName(img));
        try (NbdPeer p = NbdPeer.jblockd(dir)) {
            QmpTestClient q = p.qmp();
            q.executeOk("blockdev-add", ceph.blockdevAdd("r0", img));
            q.executeOk("block-export-add", Map.of("type", "nbd", "id", "g", "node-name", "r0", "name", "g",
                    "writable", true));
            String nbd = "nbd+unix:///g?socket=" + p.dir().resolve("nbd.sock");
            String sock = p.toolSocket().toString();
            AtomicBoolean stop = new AtomicBoolean();
            CompletableFuture<Integer> writer = guest(nbd, 1606, size, stop);
            List<String> files = new ArrayList<>();
            List<String> snaps = new ArrayList<>();
            AtomicInteger n = new AtomicInteger();
            try {
                // the full backup keeps its snapshot, named
                Path full = dir.resolve("b0.qcow2");
                CliRunner.Result r = CliRunner.run("--socket", sock, "backup", "r0", full.toString(),
                        "--format", "qcow2", "--snapshot", "s0");
                assertThat(r.code()).as(r.out() + r.err()).isZero();
                assertThat(r.out()).contains("RBD snapshot s0 kept");
                files.add(full.toString());
                snaps.add("s0");
                assertThat(compare(at(img, "s0"), "qcow2", full.toString())).isEqualTo("Images are identical.");
                // the guest goes on writing; each incremental reads the diff since the previous snapshot
                for (int i = 1; i <= 3; i++) {
                    Path inc = dir.resolve("b" + i + ".qcow2");
                    String prevSnap = snaps.getLast();
                    r = CliRunner.run("--socket", sock, "backup", "r0", inc.toString(), "--incremental", prevSnap,
                            "--previous", files.getLast(), "--snapshot", "s" + i);
                    assertThat(r.code()).as(r.out() + r.err()).isZero();
                    assertThat(r.out()).contains("chain: ");
                    files.add(inc.toString());
                    snaps.add("s" + i);
                    // the restored point (the overlay read through its chain) is the disk at s<i>
                    assertThat(compare(at(img, "s" + i), "qcow2", inc.toString())).isEqualTo("Images are identical.");
                    ExternalTools.ok("qemu-img", "check", inc.toString());
                    n.incrementAndGet();
                }
            } finally {
                stop.set(true);
            }
            assertThat(writer.get()).isPositive();
            // an incremental is a delta: once the guest is quiet, the next one is smaller than the
            // full backup (while it writes, how much of the image a round dirties depends on how
            // fast the machine is: RBD's diff is whole objects, and a few rounds touch them all)
            Path quiet = dir.resolve("b4.qcow2");
            CliRunner.Result r = CliRunner.run("--socket", sock, "backup", "r0", quiet.toString(), "--incremental",
                    "s3", "--previous", files.getLast(), "--snapshot", "s4");
            assertThat(r.code()).as(r.out() + r.err()).isZero();
            assertThat(compare(at(img, "s4"), "qcow2", quiet.toString())).isEqualTo("Images are identical.");
            assertThat(java.nio.file.Files.size(quiet)).isLessThan(java.nio.file.Files.size(Path.of(files.get(0))));
            // pruned: only the newest snapshot of the chain is left; no node of the backups stays
            assertThat(ceph.rbd("snap", "ls", "rbd/" + img)).contains("s4").doesNotContain("s0 ", "s1 ", "s2 ", "s3 ");
            for (JsonNode node : q.executeOk("query-named-block-nodes")) {
                assertThat(node.path("node-name").asText()).doesNotStartWith("jblockctl");
            }
        }
    }

    /**
     * The point-in-time steps are QEMU 7.2's own commands: jblockctl runs them against
     * qemu-storage-daemon too; the incremental needs jblockd's diff bitmaps and fails cleanly
     * there, keeping the previous snapshot and deleting the new one.
     */
    @Test
    void theSnapshotBackupRunsAgainstQemuToo() throws Exception {
        ExternalTools.assumeTools("qemu-storage-daemon");
        String img = "bk-qsd";
        long size = 32L << 20;
        ceph.createImage(img, size);
        ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 8M", ceph.rbdName(img));
        try (NbdPeer p = NbdPeer.qsd(dir)) {
            QmpTestClient q = p.qmp();
            q.executeOk("blockdev-add", ceph.blockdevAdd("r0", img));
            q.executeOk("block-export-add", Map.of("type", "nbd", "id", "g", "node-name", "r0", "name", "g",
                    "writable", true));
            AtomicBoolean stop = new AtomicBoolean();
            CompletableFuture<Integer> writer = guest("nbd+unix:///g?socket=" + p.dir().resolve("nbd.sock"), 77,
                    size, stop);
            Path full = dir.resolve("q0.qcow2");
            CliRunner.Result r;
            try {
                r = CliRunner.run("--socket", p.toolSocket().toString(), "backup", "r0", full.toString(),
                        "--format", "qcow2", "--snapshot", "s0");
            } finally {
                stop.set(true);
            }
            writer.get();
            assertThat(r.code()).as(r.out() + r.err()).isZero();
            assertThat(compare(at(img, "s0"), "qcow2", full.toString())).isEqualTo("Images are identical.");
            r = CliRunner.run("--socket", p.toolSocket().toString(), "backup", "r0", dir.resolve("q1.qcow2").toString(),
                    "--incremental", "s0", "--previous", full.toString(), "--snapshot", "s1");
            assertThat(r.code()).isNotZero();
            assertThat(r.out() + r.err()).contains("Bitmap 's0' could not be found");
            String left = ceph.rbd("snap", "ls", "rbd/" + img);
            assertThat(left).contains("s0").doesNotContain("s1");
        }
    }

    /** The diff bitmaps a snapshot node shows, and how they answer QMP that would change them. */
    @Test
    void aSnapshotNodePresentsReadOnlyDiffBitmaps() throws Exception {
        String img = "bk-bitmaps";
        ceph.createImage(img, 32L << 20);
        ceph.rbd("snap", "create", "rbd/" + img + "@a");
        ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 0x11 1M 64k", "-c", "write -P 0x22 9M 200k",
                ceph.rbdName(img));
        ceph.rbd("snap", "create", "rbd/" + img + "@b");
        try (NbdPeer p = NbdPeer.jblockd(dir)) {
            QmpTestClient q = p.qmp();
            Map<String, Object> o = ceph.blockdevAdd("sb", img);
            o.put("snapshot", "b");
            o.put("read-only", true);
            q.executeOk("blockdev-add", o);
            JsonNode bitmaps = null;
            for (JsonNode node : q.executeOk("query-named-block-nodes")) {
                if (node.path("node-name").asText().equals("sb")) {
                    bitmaps = node.path("dirty-bitmaps");
                }
            }
            assertThat(bitmaps).hasSize(1);
            assertThat(bitmaps.get(0).path("name").asText()).isEqualTo("a");
            assertThat(bitmaps.get(0).path("recording").asBoolean()).isFalse();
            // librbd: an object that did not exist at 'a' differs from its start to the end of its data
            // (0..1M+64k and 8M..9M+200k in 64k granules); the 22 other objects not at all
            assertThat(bitmaps.get(0).path("count").asLong()).isEqualTo((17 + 20) * 65536L);
            assertThat(q.executeError("block-dirty-bitmap-remove", Map.of("node", "sb", "name", "a"))
                    .path("desc").asText()).isEqualTo("Bitmap 'a' is readonly and cannot be modified");
            assertThat(q.executeError("block-dirty-bitmap-clear", Map.of("node", "sb", "name", "a"))
                    .path("desc").asText()).isEqualTo("Bitmap 'a' is readonly and cannot be modified");
            // QEMU allows enable/disable of a read-only bitmap; on a read-only node it records nothing
            q.executeOk("block-dirty-bitmap-enable", Map.of("node", "sb", "name", "a"));
            q.executeOk("block-dirty-bitmap-disable", Map.of("node", "sb", "name", "a"));
            // sync=incremental would clear it: refused as QEMU refuses any read-only bitmap
            q.executeOk("blockdev-add", Map.of("driver", "null-co", "node-name", "n0", "size", 32L << 20));
            assertThat(q.executeError("blockdev-backup", Map.of("job-id", "j", "device", "sb", "target", "n0",
                    "sync", "incremental", "bitmap", "a")).path("desc").asText())
                    .isEqualTo("Bitmap 'a' is readonly and cannot be modified");
        }
    }
}
