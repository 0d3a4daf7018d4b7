package jblockd.block.qcow2;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.BlockdevOptions;
import jblockd.block.ImageCreator;

class CacheSizesTest {
    private static final int CS = 65536;

    @TempDir
    Path dir;

    private static BlockdevOptions.Qcow2Runtime sizes(Long combined, Long l2, Long refcount) {
        return new BlockdevOptions.Qcow2Runtime(combined, l2, null, refcount, null, null, null);
    }

    @Test
    void qemusSplitOfACombinedBudget() throws Exception {
        long disk = 1L << 30; // 16384 L2 entries: two clusters of L2 tables cover it all
        assertThat(CacheSizes.of(sizes(1L << 20, null, null), disk, CS)).isEqualTo(new CacheSizes(2 * CS, (1 << 20) - 2 * CS));
        assertThat(CacheSizes.of(sizes(128L << 10, null, null), disk, CS))
                .isEqualTo(new CacheSizes(0, 128L << 10)); // less than L2 + 4 refcount clusters: refcount first
        assertThat(CacheSizes.of(sizes(1L << 20, null, 256L << 10), disk, CS))
                .isEqualTo(new CacheSizes((1 << 20) - (256 << 10), 256L << 10));
        assertThat(CacheSizes.of(sizes(null, 4L << 20, null), disk, CS)).isEqualTo(new CacheSizes(2 * CS, 0));
        assertThat(CacheSizes.of(sizes(null, null, null), disk, CS))
                .isEqualTo(new CacheSizes(Metadata.DEFAULT_CACHE_BYTES, Metadata.DEFAULT_CACHE_BYTES / 2));
        assertThatThrownBy(() -> CacheSizes.of(sizes(1L << 20, 1L << 19, 1L << 19), disk, CS))
                .hasMessage("cache-size, l2-cache-size and refcount-cache-size may not be set at the same time");
        assertThatThrownBy(() -> CacheSizes.cleanInterval(new BlockdevOptions.Qcow2Runtime(null, null, null, null,
                1L << 32, null, null))).hasMessage("Cache clean interval too big");
        assertThat(CacheSizes.cleanInterval(BlockdevOptions.Qcow2Runtime.DEFAULTS)).isEqualTo(600);
    }

    /** cache-clean-interval's round: entries used since the previous round stay, the others go; dirty ones never. */
    @Test
    void aCleanRoundDropsWhatNobodyUsedSinceTheLast() throws Exception {
        Path img = dir.resolve("c.qcow2");
        Qcow2Creator.create(new ImageCreator.Options(img, 64L << 20, null, null, CS, false));
        try (FileChannel ch = FileChannel.open(img, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            Qcow2Driver d = Qcow2Driver.openOn(null, HostFile.of(ch), false, BlockdevOptions.Qcow2Runtime.DEFAULTS,
                    false);
            d.write(0, ByteBuffer.allocate(4096).put(0, (byte) 1), false);
            d.flush();
            Metadata meta = d.metadata();
            int cached = meta.cachedTables();
            assertThat(cached).isPositive();
            meta.cleanUnusedCaches(); // used since open: kept, and now marked unused
            assertThat(meta.cachedTables()).isEqualTo(cached);
            meta.cleanUnusedCaches(); // nobody used them since: dropped
            assertThat(meta.cachedTables()).isZero();
            ByteBuffer r = ByteBuffer.allocate(4096);
            d.read(0, r); // read back through the tables, loaded again
            assertThat(r.get(0)).isEqualTo((byte) 1);
            d.write(1L << 20, ByteBuffer.allocate(4096), false); // dirty, not yet written back
            meta.cleanUnusedCaches();
            meta.cleanUnusedCaches();
            assertThat(meta.cachedTables()).isPositive();
            d.close();
        }
    }
}
