package jblockd.nbd.server;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;

import jblockd.block.Allocation;
import jblockd.block.BlockNode;
import jblockd.block.BlockStatus;

/** qemu:allocation-depth's numbers from the one chain walk (QEMU's bdrv_is_allocated_above depth). */
class AllocationDepthTest {
    private static final int B = MemDriver.BLOCK;

    @Test
    void depthIsTheLayerThatProvidesTheData() throws Exception {
        MemDriver baseDrv = new MemDriver(4 * B, null);
        baseDrv.set(0, Allocation.DATA, (byte) 1);
        baseDrv.set(1, Allocation.DATA, (byte) 1);
        BlockNode base = new BlockNode("base", false, baseDrv, false);
        MemDriver midDrv = new MemDriver(8 * B, base);
        midDrv.set(1, Allocation.ZERO, (byte) 0);
        BlockNode mid = new BlockNode("mid", false, midDrv, false);
        MemDriver topDrv = new MemDriver(8 * B, mid);
        topDrv.set(0, Allocation.DATA, (byte) 2);
        BlockNode top = new BlockNode("top", false, topDrv, false);

        assertThat(BlockStatus.allocationDepth(top, 0, 8L * B).depth()).isEqualTo(1);
        assertThat(BlockStatus.allocationDepth(top, B, 7L * B).depth()).isEqualTo(2); // a zero cluster counts
        BlockStatus.Depth d = BlockStatus.allocationDepth(top, 2L * B, 6L * B);
        assertThat(d.depth()).isZero(); // nothing allocates blocks 2, 3 anywhere
        assertThat(d.extent().length()).isEqualTo(2L * B);
        // past the end of the shorter base: zeroes synthesized at the base's depth
        assertThat(BlockStatus.allocationDepth(top, 4L * B, 4L * B).depth()).isEqualTo(3);
    }
}
