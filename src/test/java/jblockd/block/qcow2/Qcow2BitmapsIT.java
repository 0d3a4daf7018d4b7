package jblockd.block.qcow2;

import static jblockd.block.qcow2.BitmapImages.bitmap;
import static jblockd.block.qcow2.BitmapImages.granules;
import static jblockd.block.qcow2.BitmapImages.ok;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.BitSet;
import java.util.List;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import com.fasterxml.jackson.databind.JsonNode;

import jblockd.block.FormatSpecific;
import jblockd.block.IoError;
import jblockd.block.bitmap.PersistentBitmapStore;
import jblockd.block.bitmap.StoredBitmap;

/**
 * Persistent bitmaps against QEMU 7.2 both ways: images whose bitmaps qemu-img and qemu-io
 * wrote load with their bits; what jblockd stores, qemu-img info/check and qemu-nbd read back;
 * the header and directory states of bitmaps.md §7.2 while open; QEMU's bytes (§8) as a golden
 * check of the layout.
 */
class Qcow2BitmapsIT {
    private static final long MIB = 1 << 20;
    private static final long G64K = 65536;

    @TempDir
    Path dir;

    @BeforeEach
    void tools() {
        BitmapImages.assumeTools("qemu-img", "qemu-io", "qemu-nbd", "nbdinfo");
    }

    /** The worked example of bitmaps.md §8: bm0 records writes at 0+64k and 8M+4k; "cold" is disabled. */
    private Path qemuImage() throws Exception {
        Path img = dir.resolve("q.qcow2");
        ok("qemu-img", "create", "-q", "-f", "qcow2", img.toString(), "16M");
        ok("qemu-img", "bitmap", "--add", img.toString(), "bm0");
        ok("qemu-img", "bitmap", "--add", "-g", "512k", "--disable", img.toString(), "cold");
        ok("qemu-io", "-c", "write -P 0xaa 0 64k", "-c", "write 8M 4k", img.toString());
        return img;
    }

    @Test
    void loadsTheBitsQemuStored() throws Exception {
        Path img = qemuImage();
        byte[] before = Files.readAllBytes(img);
        try (BitmapImages.Opened o = BitmapImages.open(img, true)) {
            PersistentBitmapStore s = o.store();
            assertThat(s.readOnly()).isTrue();
            assertThat(s.loaded()).extracting(StoredBitmap::name).containsExactly("bm0", "cold");
            StoredBitmap bm0 = o.loaded("bm0");
            assertThat(bm0.granularity()).isEqualTo(G64K);
            assertThat(bm0.enabled()).isTrue();
            assertThat(bm0.inconsistent()).isFalse();
            assertThat(bm0.length()).isEqualTo(16 * MIB);
            assertThat(bm0.bits()).isEqualTo(granules(G64K, 0, 65536, 8 * MIB, 4096));
            StoredBitmap cold = o.loaded("cold");
            assertThat(cold.enabled()).isFalse();
            assertThat(cold.granularity()).isEqualTo(512 * 1024);
            assertThat(cold.bits().isEmpty()).isTrue();
        }
        assertThat(Files.readAllBytes(img)).as("a read-only open writes nothing").isEqualTo(before);
    }

    @Test
    void readWriteOpenMarksThemInUseAndStoreClearsIt() throws Exception {
        Path img = qemuImage();
        try (BitmapImages.Opened o = BitmapImages.open(img, false)) {
            assertThat(BitmapImages.qemuBitmaps(img)).extracting(b -> b.get("flags").toString())
                    .containsExactly("[\"in-use\",\"auto\"]", "[\"in-use\"]");
            assertThat(BitmapImages.autoclear(img)).isEqualTo(1);
            FormatSpecific.Qcow2 f = (FormatSpecific.Qcow2) o.driver().formatSpecific().orElseThrow();
            assertThat(f.bitmaps()).extracting(FormatSpecific.Qcow2Bitmap::flags)
                    .containsExactly(List.of("in-use", "auto"), List.of("in-use"));
            o.write(4 * MIB, 4096, 0x11);
            StoredBitmap bm0 = o.loaded("bm0");
            BitSet bits = (BitSet) bm0.bits().clone();
            bits.or(granules(G64K, 4 * MIB, 4096));
            o.store().store(List.of(bitmap("bm0", G64K, 16 * MIB, true, bits), o.loaded("cold")));
            f = (FormatSpecific.Qcow2) o.driver().formatSpecific().orElseThrow();
            assertThat(f.bitmaps()).extracting(FormatSpecific.Qcow2Bitmap::flags)
                    .containsExactly(List.of("auto"), List.of());
        }
        List<JsonNode> q = BitmapImages.qemuBitmaps(img);
        assertThat(q).extracting(b -> b.get("name").asText()).containsExactly("bm0", "cold");
        assertThat(q).extracting(b -> b.get("flags").toString()).containsExactly("[\"auto\"]", "[]");
        assertThat(q.get(1).get("granularity").asLong()).isEqualTo(512 * 1024);
        BitmapImages.Result check = BitmapImages.check(img);
        assertThat(check.exit()).as(check.out()).isZero();
        assertThat(check.out()).doesNotContain("leaked");
        assertThat(BitmapImages.qemuBits(img, "bm0", G64K))
                .isEqualTo(granules(G64K, 0, 65536, 4 * MIB, 4096, 8 * MIB, 4096));
        assertThat(BitmapImages.qemuBits(img, "cold", 512 * 1024).isEmpty()).isTrue();
    }

    @Test
    void storingNothingDropsTheExtensionAndBitZero() throws Exception {
        Path img = qemuImage();
        try (BitmapImages.Opened o = BitmapImages.open(img, false)) {
            o.store().store(List.of());
        }
        assertThat(BitmapImages.bitmapsExtension(img)).isNull();
        assertThat(BitmapImages.autoclear(img)).isZero();
        assertThat(BitmapImages.qemuBitmaps(img)).isEmpty();
        BitmapImages.Result check = BitmapImages.check(img);
        assertThat(check.exit()).as(check.out()).isZero();
    }

    @Test
    void removeRewritesTheDirectoryAtOnceAndTheLastOneDropsTheExtension() throws Exception {
        Path img = qemuImage();
        try (BitmapImages.Opened o = BitmapImages.open(img, false)) {
            o.store().remove("cold");
            assertThat(BitmapImages.qemuBitmaps(img)).extracting(b -> b.get("name").asText()).containsExactly("bm0");
            assertThat(BitmapImages.check(img).exit()).isZero();
            o.store().remove("nosuch"); // absence is no error, as in QEMU
            o.store().remove("bm0");
            assertThat(BitmapImages.bitmapsExtension(img)).isNull();
            assertThat(BitmapImages.autoclear(img)).isZero();
        }
        BitmapImages.Result check = BitmapImages.check(img);
        assertThat(check.exit()).as(check.out()).isZero();
        assertThat(check.out()).doesNotContain("leaked");
    }

    @Test
    void corruptDirectoryIsRefusedAndTheImageLeftAlone() throws Exception {
        Path img = qemuImage();
        long[] ext = BitmapImages.bitmapsExtension(img);
        BitmapImages.patch(img, ext[2] + 17, new byte[] {5}); // granularity_bits of bm0
        byte[] before = Files.readAllBytes(img);
        assertThatThrownBy(() -> BitmapImages.open(img, false)).isInstanceOf(IoError.class)
                .hasMessage("Could not open qcow2 image: Bitmap 'bm0' doesn't satisfy the constraints");
        assertThatThrownBy(() -> BitmapImages.open(img, true)).isInstanceOf(IoError.class)
                .hasMessageContaining("Bitmap 'bm0' doesn't satisfy the constraints");
        assertThat(Files.readAllBytes(img)).isEqualTo(before);
        // QEMU agrees that the image cannot be opened
        assertThat(BitmapImages.run("qemu-img", "info", img.toString()).out())
                .contains("Bitmap 'bm0' doesn't satisfy the constraints");
    }

    @Test
    void bitmapTablePastTheEndIsRefused() throws Exception {
        Path img = qemuImage();
        long[] ext = BitmapImages.bitmapsExtension(img);
        BitmapImages.patch(img, ext[2], java.nio.ByteBuffer.allocate(8).putLong(0, 0x10000000L).array());
        byte[] before = Files.readAllBytes(img);
        assertThatThrownBy(() -> BitmapImages.open(img, false)).isInstanceOf(IoError.class)
                .hasMessageStartingWith("Could not open qcow2 image: Could not read bitmap_table table from image "
                        + "for bitmap 'bm0': Invalid argument (the table at 0x10000000 is past the end");
        assertThat(Files.readAllBytes(img)).isEqualTo(before);
    }

    /**
     * The same image re-stored by QEMU (qemu-io opens it read-write and stores its bitmaps at
     * exit) and by jblockd (open read-write, store what was loaded): byte-identical files. The
     * layout of §8 follows: QEMU's order of data clusters, table and directory, the first free
     * clusters reused, the old ones freed and the data ones discarded.
     */
    @Test
    void restoringIsByteIdenticalToQemus() throws Exception {
        Path img = qemuImage();
        Path byQemu = dir.resolve("by-qemu.qcow2");
        Path byUs = dir.resolve("by-us.qcow2");
        Files.copy(img, byQemu);
        Files.copy(img, byUs);
        ok("qemu-io", "-c", "flush", byQemu.toString());
        // the driver alone: a node would arm jblockd's crash record at the open, which keeps
        // full bitmap tables allocated (docs/qcow2-bitmaps.md) and so lays the clusters out
        // differently from QEMU; the store's own format is what is compared here
        try (BitmapImages.Opened o = BitmapImages.open(byUs, false)) {
            o.store().store(o.store().loaded());
        }
        BitmapImages.Result cmp = BitmapImages.run("cmp", "-l", byQemu.toString(), byUs.toString());
        // Opened without discard, the driver leaves the old bitmap data in the cluster it frees,
        // where QEMU (qemu-io opens with discard=unmap) discards it: a byte may differ only
        // where QEMU's copy reads zero, in a cluster the image no longer references
        List<String> other = cmp.out().lines().filter(l -> !l.trim().split("\\s+")[1].equals("0")).toList();
        assertThat(other).as("cmp -l QEMU's jblockd's (offset, octal bytes):%n%s",
                cmp.out().lines().limit(20).collect(java.util.stream.Collectors.joining("\n"))).isEmpty();
        ok("qemu-img", "check", byUs.toString());
    }

    /** §8's bytes: extension, directory entry, table entry and data as QEMU lays them out. */
    @Test
    void layoutMatchesTheWorkedExample() throws Exception {
        Path img = dir.resolve("wx.qcow2");
        ok("qemu-img", "create", "-q", "-f", "qcow2", img.toString(), "16M");
        ok("qemu-img", "bitmap", "--add", img.toString(), "bm0");
        try (BitmapImages.Opened o = BitmapImages.open(img, false)) {
            o.write(0, 65536, 0xaa);
            o.write(8 * MIB, 4096, 0xcd);
            o.store().store(List.of(bitmap("bm0", G64K, 16 * MIB, true, granules(G64K, 0, 65536, 8 * MIB, 4096))));
        }
        assertThat(BitmapImages.autoclear(img)).isEqualTo(1);
        assertThat(BitmapImages.read(img, 0x1f8, 16)).isEqualTo(hex("2385287500000018 0000000100000000"));
        long[] ext = BitmapImages.bitmapsExtension(img);
        assertThat(ext[1]).isEqualTo(32);
        byte[] entry = BitmapImages.read(img, ext[2], 32);
        long table = java.nio.ByteBuffer.wrap(entry).getLong(0);
        assertThat(java.util.Arrays.copyOfRange(entry, 8, 32))
                .isEqualTo(hex("0000000100000002 0110000300000000 626d300000000000"));
        long data = java.nio.ByteBuffer.wrap(BitmapImages.read(img, table, 8)).getLong(0);
        assertThat(BitmapImages.read(img, data, 32))
                .isEqualTo(hex("0100000000000000 0000000000000000 0100000000000000 0000000000000000"));
        assertThat(Files.size(img)).as("the directory is not padded to a cluster").isEqualTo(ext[2] + 32);
        BitmapImages.Result check = BitmapImages.check(img);
        assertThat(check.exit()).as(check.out()).isZero();
    }

    private static byte[] hex(String s) {
        return java.util.HexFormat.of().parseHex(s.replace(" ", ""));
    }
}
