package jblockd.block;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.ByteBuffer;

import org.junit.jupiter.api.Test;

/**
 * bdrv_co_block_status's rule for "not allocated" at the bottom of a chain: zeroes only for a
 * layer that can have a backing file; a protocol layer's (an NBD server's HOLE without ZERO) is
 * data to read and copy.
 */
class BlockStatusUnknownHoleTest {
    /** Every range "not allocated"; {@code formatLike}: it could have a backing file. */
    private static BlockNode node(boolean formatLike) {
        BlockDriver d = new BlockDriver() {
            public String driverName() {
                return "t";
            }

            public void read(long offset, ByteBuffer dst) {
                dst.position(dst.limit());
            }

            public void write(long offset, ByteBuffer src, boolean fua) {
                src.position(src.limit());
            }

            public void writeZeroes(long offset, long length, boolean mayUnmap) {
            }

            public void discard(long offset, long length) {
            }

            public void flush() {
            }

            public long length() {
                return 1 << 20;
            }

            public Extent status(long offset, long length) {
                return new Extent(offset, length, Allocation.UNALLOCATED);
            }

            public Capabilities capabilities() {
                return Capabilities.readWrite();
            }

            public void close() {
            }

            public String filename() {
                return "t";
            }

            @Override
            public boolean supportsBacking() {
                return formatLike;
            }
        };
        return new BlockNode("n", false, d, false);
    }

    @Test
    void aProtocolLayersHoleWithoutZeroIsDataToRead() throws Exception {
        BlockNode n = node(false);
        assertThat(BlockStatus.readView(n, 0, 4096).allocation()).isEqualTo(Allocation.DATA);
        assertThat(BlockStatus.readViewDetail(n, 0, 4096).unknownHole()).isTrue();
        assertThat(BlockStatus.above(n, null, 0, 4096).allocation()).isEqualTo(Allocation.DATA);
        assertThat(BlockStatus.allocationDepth(n, 0, 4096).depth()).isZero();
    }

    @Test
    void aFormatLayerWithoutBackingReadsItsUnallocatedRangesAsZeroes() throws Exception {
        BlockNode n = node(true);
        assertThat(BlockStatus.readView(n, 0, 4096).allocation()).isEqualTo(Allocation.ZERO);
        assertThat(BlockStatus.readViewDetail(n, 0, 4096).unknownHole()).isFalse();
        assertThat(BlockStatus.above(n, null, 0, 4096).allocation()).isEqualTo(Allocation.UNALLOCATED);
    }
}
