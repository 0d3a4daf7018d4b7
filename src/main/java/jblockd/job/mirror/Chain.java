package jblockd.job.mirror;

import java.util.ArrayList;
import java.util.List;

import jblockd.block.BlockNode;

/**
 * Backing-chain structure shared by mirror, stream and commit (their status walk is
 * {@link jblockd.block.BlockStatus}). QEMU block.c
 * bdrv_find_overlay() and friends. Stateless.
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

}
