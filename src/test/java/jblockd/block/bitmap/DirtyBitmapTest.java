package jblockd.block.bitmap;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.BitSet;

import org.junit.jupiter.api.Test;

class DirtyBitmapTest {

    @Test
    void markRoundsOutToWholeGranules() {
        DirtyBitmap b = new DirtyBitmap(1 << 20, 4096);
        b.mark(4095, 2);
        assertThat(b.dirtyBytes()).isEqualTo(8192);
        assertThat(b.nextDirtyRun(0, 1 << 20)).containsExactly(0, 8192);
        assertThat(b.isDirty(8192)).isFalse();
    }

    @Test
    void clearRemovesTouchedGranulesAndCountStaysExact() {
        DirtyBitmap b = new DirtyBitmap(1 << 20, 4096);
        b.markAll();
        assertThat(b.dirtyBytes()).isEqualTo(1 << 20);
        b.clear(4096, 4096 * 3);
        b.mark(4096, 1);
        assertThat(b.dirtyBytes()).isEqualTo((1 << 20) - 2 * 4096);
        assertThat(b.nextDirtyRun(4096, 1 << 20)).containsExactly(4096, 4096);
        assertThat(b.nextDirtyRun(8192, 1 << 20)).containsExactly(16384, (1 << 20) - 16384);
    }

    @Test
    void runsAreLimitedToMaxLengthAndClippedAtTheEnd() {
        DirtyBitmap b = new DirtyBitmap(10_000, 4096);
        b.markAll();
        assertThat(b.dirtyBytes()).isEqualTo(10_000);
        assertThat(b.nextDirtyRun(0, 4096)).containsExactly(0, 4096);
        assertThat(b.nextDirtyRun(8192, 1 << 20)).containsExactly(8192, 10_000 - 8192);
        assertThat(b.nextDirtyRun(10_000, 1 << 20)).isNull();
        b.clear(0, 10_000);
        assertThat(b.isClean()).isTrue();
        assertThat(b.nextDirtyRun(0, 1 << 20)).isNull();
    }

    @Test
    void rejectsGranularityThatIsNotAPowerOfTwo() {
        assertThatThrownBy(() -> new DirtyBitmap(1 << 20, 3000)).isInstanceOf(IllegalArgumentException.class);
    }

    @Test
    void concurrentMarksAreAllCounted() throws Exception {
        DirtyBitmap b = new DirtyBitmap(64L << 20, 65536);
        Thread[] ts = new Thread[8];
        for (int t = 0; t < ts.length; t++) {
            int id = t;
            ts[t] = Thread.ofVirtual().start(() -> {
                for (int i = id; i < 1024; i += 8) {
                    b.mark((long) i * 65536, 1);
                }
            });
        }
        for (Thread t : ts) {
            t.join();
        }
        assertThat(b.dirtyBytes()).isEqualTo(64L << 20);
    }
    @Test
    void countIsWholeGranulesWhileDirtyBytesClipsTheLastOne() {
        // bitmaps.md §4: a 512-byte write into the last, partial granule of 1 MiB + 512 counts 65536
        DirtyBitmap b = new DirtyBitmap((1 << 20) + 512, 65536);
        b.mark(1 << 20, 512);
        assertThat(b.count()).isEqualTo(65536);
        assertThat(b.dirtyGranules()).isEqualTo(1);
        assertThat(b.dirtyBytes()).isEqualTo(512);
    }

    @Test
    void countExampleOfTheReference() {
        // bitmaps.md §4: writes 0+1, 65536+4096, 1048576+65537 on b0 (64 KiB) and b1 (512)
        DirtyBitmap b0 = new DirtyBitmap(2 << 20, 65536);
        DirtyBitmap b1 = new DirtyBitmap(2 << 20, 512);
        for (DirtyBitmap b : new DirtyBitmap[] {b0, b1}) {
            b.mark(0, 1);
            b.mark(65536, 4096);
            b.mark(1048576, 65537);
        }
        assertThat(b0.count()).isEqualTo(262144);
        assertThat(b1.count()).isEqualTo(70656);
    }

    @Test
    void sha256HashesTheWordsAsQemuDoes() {
        // observed on qemu-storage-daemon 7.2: a null-co node of 1049088 bytes, writes 0+1,
        // 65536+4096 and 1048576+512 over NBD, x-debug-block-dirty-bitmap-sha256
        DirtyBitmap b0 = new DirtyBitmap(1049088, 65536);
        DirtyBitmap b1 = new DirtyBitmap(1049088, 512);
        assertThat(b0.sha256()).isEqualTo("af5570f5a1810b7af78caf4bc70a660f0df51e42baf91d4de5b2328de0e83dfc");
        assertThat(b1.sha256()).isEqualTo("44b8aa4d28701168922acf61435ea4bb442f97b0b14ad7a2510ed68874ee2a72");
        for (DirtyBitmap b : new DirtyBitmap[] {b0, b1}) {
            b.mark(0, 1);
            b.mark(65536, 4096);
            b.mark(1048576, 512);
        }
        assertThat(b0.sha256()).isEqualTo("8f5ddf95556d18f859996016bfb8ab9962682dab3df8947bebdb3bec77426406");
        assertThat(b1.sha256()).isEqualTo("379f51e86790558b864136d5c1da4f5e60fe9156334e739ec1e65cc597595fa9");
        // an empty bitmap still hashes one word (HBitmap levels have at least one)
        assertThat(new DirtyBitmap(0, 65536).sha256())
                .isEqualTo("af5570f5a1810b7af78caf4bc70a660f0df51e42baf91d4de5b2328de0e83dfc");
        assertThat(b0.copy().sha256()).isEqualTo(b0.sha256());
    }

    @Test
    void orOfAFinerSourceRoundsOutToTheTargetsGranules() {
        DirtyBitmap fine = new DirtyBitmap(1 << 20, 4096);
        fine.mark(4096, 1);
        fine.mark(200_000, 1);
        DirtyBitmap coarse = new DirtyBitmap(1 << 20, 65536);
        coarse.or(fine);
        assertThat(coarse.count()).isEqualTo(2 * 65536);
        assertThat(coarse.isDirty(0)).isTrue();
        assertThat(coarse.isDirty(196608)).isTrue();
        DirtyBitmap same = new DirtyBitmap(1 << 20, 4096);
        same.mark(0, 1);
        same.or(fine);
        assertThat(same.count()).isEqualTo(3 * 4096);
        same.or(same);
        assertThat(same.count()).isEqualTo(3 * 4096);
    }

    @Test
    void bitSetRoundTripKeepsEveryBitAndDropsBitsPastTheEnd() {
        DirtyBitmap b = new DirtyBitmap(100 * 512, 512);
        b.mark(0, 512);
        b.mark(63 * 512, 3 * 512);
        b.mark(99 * 512, 1);
        BitSet bits = b.toBitSet();
        assertThat(bits.stream().boxed().toList()).containsExactly(0, 63, 64, 65, 99);
        bits.set(100, 200); // past the end
        DirtyBitmap back = DirtyBitmap.of(100 * 512, 512, bits);
        assertThat(back.toBitSet()).isEqualTo(b.toBitSet());
        assertThat(back.count()).isEqualTo(5 * 512);
    }

    @Test
    void growingKeepsTheBitsAndTheNewAreaIsClean() {
        DirtyBitmap b = new DirtyBitmap(128 * 1024, 65536);
        b.mark(65536, 1);
        b.resize(10L << 20);
        assertThat(b.length()).isEqualTo(10L << 20);
        assertThat(b.count()).isEqualTo(65536);
        assertThat(b.nextDirtyRun(131072, Long.MAX_VALUE)).isNull();
        b.mark(9L << 20, 1);
        assertThat(b.count()).isEqualTo(2 * 65536);
        b.resize(65536);
        assertThat(b.count()).isZero();
    }

    @Test
    void oneTebibyteAt64KiBIsTwoMebibytesOfBitsAndHugeBitCountsAreRefused() {
        DirtyBitmap tib = new DirtyBitmap(1L << 40, 65536);
        tib.mark((1L << 40) - 1, 1);
        assertThat(tib.count()).isEqualTo(65536);
        assertThat(tib.toBitSet().size()).isEqualTo(1 << 24); // 2^24 bits = 2 MiB: 2 KiB per GiB
        assertThatThrownBy(() -> new DirtyBitmap(1L << 50, 512))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("coarser granularity");
        DirtyBitmap big = new DirtyBitmap(1L << 32, 1L << 31); // granularity 2^31 is allowed
        big.mark(0, 1);
        assertThat(big.count()).isEqualTo(1L << 31);
    }

    @Test
    void copyAndRestoreUndoAClear() {
        DirtyBitmap b = new DirtyBitmap(1 << 20, 4096);
        b.mark(8192, 8192);
        DirtyBitmap saved = b.copy();
        b.clearAll();
        assertThat(b.isClean()).isTrue();
        b.restore(saved);
        assertThat(b.count()).isEqualTo(8192);
        assertThat(b.nextDirtyRun(0, Long.MAX_VALUE)).containsExactly(8192, 8192);
    }

    @Test
    void allDirtyIsTrueOnlyWhenEveryTouchedGranuleIsDirtyAndInRange() {
        DirtyBitmap b = new DirtyBitmap(1 << 20, 4096);
        assertThat(b.allDirty(0, 4096)).isFalse();
        b.mark(8192, 3 * 4096);
        assertThat(b.allDirty(8192, 3 * 4096)).isTrue();
        assertThat(b.allDirty(8193, 100)).isTrue();
        assertThat(b.allDirty(8192 - 1, 2)).as("touches a clean granule").isFalse();
        assertThat(b.allDirty(8192, 3 * 4096 + 1)).isFalse();
        b.markAll();
        assertThat(b.allDirty(0, 1 << 20)).isTrue();
        assertThat(b.allDirty((1 << 20) - 1, 2)).as("past the end").isFalse();
        assertThat(b.allDirty(0, 0)).isFalse();
        b.clear(64 * 4096, 1);
        assertThat(b.allDirty(0, 1 << 20)).isFalse();
        assertThat(b.allDirty(63 * 4096, 4096)).isTrue();
        assertThat(b.allDirty(64 * 4096, 1)).isFalse();
    }
}
