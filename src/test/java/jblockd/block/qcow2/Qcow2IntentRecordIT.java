package jblockd.block.qcow2;

import static jblockd.block.qcow2.BitmapImages.granules;
import static jblockd.block.qcow2.BitmapImages.ok;
import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Path;
import java.util.BitSet;
import java.util.List;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.bitmap.StoredBitmap;

/**
 * jblockd's write-intent record (docs/qcow2-bitmaps.md): after a crash the bitmaps come back
 * consistent, holding every write, while QEMU sees a valid image with in_use bitmaps.
 */
class Qcow2IntentRecordIT {
    private static final long MIB = 1 << 20;
    private static final long G4K = 4096;
    /** One 512-byte sector of bitmap data at 4 KiB granularity covers 16 MiB of guest. */
    private static final long REGION = 16 * MIB;

    @TempDir
    Path dir;

    @BeforeEach
    void tools() {
        BitmapImages.assumeTools("qemu-img", "qemu-io", "qemu-nbd", "nbdinfo");
    }

    /** 64 MiB: bm0 (4 KiB, enabled, 4 sectors of data) holds a write at 0; cold (64 KiB) is disabled. */
    private Path image() throws Exception {
        Path img = dir.resolve("i.qcow2");
        ok("qemu-img", "create", "-q", "-f", "qcow2", img.toString(), "64M");
        ok("qemu-img", "bitmap", "--add", "-g", "4k", img.toString(), "bm0");
        ok("qemu-img", "bitmap", "--add", "--disable", img.toString(), "cold");
        ok("qemu-io", "-c", "write 0 4k", img.toString());
        return img;
    }

    @Test
    void crashAfterSyncKeepsEveryWriteAndQemuSeesInUseBitmaps() throws Exception {
        Path img = image();
        try (BitmapImages.Opened o = BitmapImages.open(img, false)) {
            o.store().sync(o.store().loaded());
            o.write(20 * MIB, 4096, 0x42);
            o.crash();
        }
        // QEMU: a valid image, the bitmaps in_use (inconsistent to it), nothing to repair
        assertThat(BitmapImages.qemuBitmaps(img)).extracting(b -> b.get("flags").toString())
                .containsExactly("[\"in-use\",\"auto\"]", "[\"in-use\"]");
        BitmapImages.Result check = BitmapImages.check(img);
        assertThat(check.exit()).as(check.out()).isZero();
        try (BitmapImages.Opened o = BitmapImages.open(img, true)) {
            StoredBitmap bm0 = o.loaded("bm0");
            assertThat(bm0.inconsistent()).isFalse();
            assertThat(bm0.enabled()).isTrue();
            // the region written since the sync is coarse, the other sectors hold the fine bits
            BitSet want = granules(G4K, 0, 4096, REGION, REGION);
            assertThat(bm0.bits()).isEqualTo(want);
            assertThat(o.loaded("cold").inconsistent()).isFalse();
            assertThat(o.loaded("cold").bits().isEmpty()).isTrue();
        }
    }

    /** md's lazy clearing: a region stays coarse while it is written, and goes fine after a quiet interval. */
    @Test
    void aRegionGoesBackToFineBitsOnlyAfterAQuietInterval() throws Exception {
        Path img = image();
        BitSet fine = granules(G4K, 0, 4096, 20 * MIB, 4096);
        try (BitmapImages.Opened o = BitmapImages.open(img, false)) {
            o.store().sync(o.store().loaded());
            o.write(20 * MIB, 4096, 0x42);
            o.store().sync(List.of(withBits(o.loaded("bm0"), fine), o.loaded("cold")));
            o.crash();
        }
        assertThat(recovered(img, "bm0")).as("touched since the previous sync: still coarse")
                .isEqualTo(granules(G4K, 0, 4096, REGION, REGION));
        try (BitmapImages.Opened o = BitmapImages.open(img, false)) {
            StoredBitmap bm0 = o.loaded("bm0");
            o.store().sync(List.of(withBits(bm0, fine), o.loaded("cold"))); // arms again: coarse
            o.store().sync(List.of(withBits(bm0, fine), o.loaded("cold"))); // a quiet interval: fine
            o.crash();
        }
        assertThat(recovered(img, "bm0")).isEqualTo(fine);
    }

    @Test
    void aCleanStoreAfterTheRecordLeavesQemusStateAndNoLeaks() throws Exception {
        Path img = image();
        try (BitmapImages.Opened o = BitmapImages.open(img, false)) {
            o.store().sync(o.store().loaded());
            o.write(40 * MIB, 8192, 0x42);
            BitSet bits = granules(G4K, 0, 4096, 40 * MIB, 8192);
            o.store().store(List.of(withBits(o.loaded("bm0"), bits), o.loaded("cold")));
        }
        assertThat(BitmapImages.autoclear(img)).isEqualTo(1);
        assertThat(BitmapImages.qemuBitmaps(img)).extracting(b -> b.get("flags").toString())
                .containsExactly("[\"auto\"]", "[]");
        BitmapImages.Result check = BitmapImages.check(img);
        assertThat(check.exit()).as(check.out()).isZero();
        assertThat(check.out()).doesNotContain("leaked");
        assertThat(BitmapImages.qemuBits(img, "bm0", G4K)).isEqualTo(granules(G4K, 0, 4096, 40 * MIB, 8192));
    }

    /**
     * QEMU clears the unknown autoclear bit 63 when it opens the image read-write: its writes
     * void the record, and jblockd then finds the in_use bitmaps as inconsistent as QEMU does.
     */
    @Test
    void aWriteByQemuAfterTheCrashVoidsTheRecord() throws Exception {
        Path img = image();
        try (BitmapImages.Opened o = BitmapImages.open(img, false)) {
            o.store().sync(o.store().loaded());
            o.crash();
        }
        assertThat(BitmapImages.autoclear(img)).isEqualTo(Qcow2Header.AUTOCLEAR_JBLOCKD_INTENT | 1);
        // read-only opens (info, check, a read-only qemu-io) leave an unknown autoclear bit alone
        BitmapImages.qemuBitmaps(img);
        assertThat(BitmapImages.check(img).exit()).isZero();
        ok("qemu-io", "-r", "-c", "read 0 4k", img.toString());
        assertThat(BitmapImages.autoclear(img)).isEqualTo(Qcow2Header.AUTOCLEAR_JBLOCKD_INTENT | 1);
        ok("qemu-io", "-c", "write 50M 4k", img.toString());
        assertThat(BitmapImages.autoclear(img)).isEqualTo(1);
        try (BitmapImages.Opened o = BitmapImages.open(img, true)) {
            assertThat(o.store().loaded()).extracting(StoredBitmap::inconsistent).containsExactly(true, true);
        }
    }

    @Test
    void aBitmapAddedBySyncAndARemovalSurviveACrash() throws Exception {
        Path img = image();
        try (BitmapImages.Opened o = BitmapImages.open(img, false)) {
            StoredBitmap added = BitmapImages.bitmap("new", 65536, 64 * MIB, true, granules(65536, 10 * MIB, 1));
            o.store().sync(List.of(o.loaded("bm0"), o.loaded("cold"), added));
            o.write(30 * MIB, 512, 0x42);
            o.store().remove("cold");
            o.crash();
        }
        assertThat(BitmapImages.qemuBitmaps(img)).extracting(b -> b.get("name").asText()).containsExactly("bm0", "new");
        assertThat(BitmapImages.check(img).exit()).isZero();
        try (BitmapImages.Opened o = BitmapImages.open(img, true)) {
            assertThat(o.loaded("new").inconsistent()).isFalse();
            // 64 KiB granularity: one sector covers the whole 64 MiB image
            assertThat(o.loaded("new").bits()).isEqualTo(granules(65536, 0, 64 * MIB));
            assertThat(o.loaded("bm0").bits()).isEqualTo(granules(G4K, 0, 4096, REGION, REGION));
        }
    }

    private static StoredBitmap withBits(StoredBitmap b, BitSet bits) {
        return new StoredBitmap(b.name(), b.granularity(), b.length(), b.enabled(), false, bits);
    }

    private static BitSet recovered(Path img, String name) throws Exception {
        try (BitmapImages.Opened o = BitmapImages.open(img, true)) {
            StoredBitmap b = o.loaded(name);
            assertThat(b.inconsistent()).as("recovered, not inconsistent").isFalse();
            return b.bits();
        }
    }
}
