package jblockd.job.mirror;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;

import jblockd.block.Allocation;
import jblockd.block.BlockNode;
import jblockd.block.Extent;

/**
 * Backing-chain walks shared by mirror, stream and commit (QEMU block/io.c
 * {@code bdrv_block_status_above} / {@code bdrv_is_allocated_above}). Stateless.
 */
public final class Chain {
    private Chain() {
    }

    /**
     * The layers from {@code top} down its backing links, stopping before {@code base}
     * ({@code base} null: to the bottom). Returns null when {@code base} is not in the chain.
     */
    public static List<BlockNode> layers(BlockNode top, BlockNode base) {
        List<BlockNode> out = new ArrayList<>();
        for (BlockNode n = top; n != null; n = n.driver().backing()) {
            if (n == base) {
                return out;
            }
            out.add(n);
            if (out.size() > 4096) {
                throw new IllegalStateException("backing chain loop at " + n);
            }
        }
        return base == null ? out : null;
    }

    /** True when {@code node} is {@code top} or below it in its backing chain. */
    public static boolean contains(BlockNode top, BlockNode node) {
        for (BlockNode n = top; n != null; n = n.driver().backing()) {
            if (n == node) {
                return true;
            }
        }
        return false;
    }

    /** The node whose backing is {@code child}, searching down from {@code top}; null if none. */
    public static BlockNode overlayOf(BlockNode top, BlockNode child) {
        for (BlockNode n = top; n != null; n = n.driver().backing()) {
            if (n.driver().backing() == child) {
                return n;
            }
        }
        return null;
    }

    /**
     * The status of {@code [offset, offset+len)} as seen through the layers {@code top} down to,
     * not including, {@code base} (null: the whole chain): the first layer that has the start
     * allocated decides (DATA or ZERO); UNALLOCATED when no such layer does. The run is clipped
     * to the shortest run of every layer asked. A range past the end of a shorter layer reads as
     * zeroes there and counts as allocated ZERO, as QEMU's bdrv_is_allocated_above() does.
     */
    public static Extent statusAbove(BlockNode top, BlockNode base, long offset, long len) throws IOException {
        long n = len;
        for (BlockNode l = top; l != null && l != base; l = l.driver().backing()) {
            long size = l.length();
            if (offset >= size) {
                return new Extent(offset, n, Allocation.ZERO);
            }
            Extent e = l.status(offset, Math.min(n, size - offset));
            n = Math.min(n, e.length());
            if (e.allocation() != Allocation.UNALLOCATED) {
                return new Extent(offset, n, e.allocation());
            }
        }
        return new Extent(offset, n, Allocation.UNALLOCATED);
    }
}
