package jblockd.block.bitmap;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

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
}
