package jblockd.block;

import java.io.IOException;

/**
 * The one walk of a chain's allocation status (QEMU block/io.c
 * {@code bdrv_co_common_block_status_above}), used by everyone who asks "what is at this
 * offset": the NBD server (sparse reads, BLOCK_STATUS), backup's block copy, mirror, stream and
 * commit. Stateless.
 * <p>
 * The walk goes down QEMU's {@code bdrv_filter_or_cow_bs()}: a filter (blkdebug,
 * copy-before-write, a job's top filter) has no allocation of its own, so the walk steps into
 * its {@link BlockDriver#filtered() filtered child} without asking it; any other layer is asked,
 * and when it does not allocate the range the walk steps into its
 * {@link BlockDriver#backing() backing node}. The first layer that allocates the start of the
 * range decides (DATA or ZERO). The run returned is clipped to the shortest run of every layer
 * asked, so it is one status all the way through. A layer shorter than the offset reads as
 * zeroes there, which counts as allocated ZERO at that layer (the "synthesized zeroes beyond
 * EOF" rule of bdrv_co_common_block_status_above).
 * <p>
 * {@link Allocation#UNALLOCATED} means no layer from {@code top} down to (not including)
 * {@code base} allocates the range: reads come from {@code base} or, with {@code base} null,
 * there is nothing below and the range reads as zeroes ({@link #readView} says so).
 */
public final class BlockStatus {
    /** Deeper chains than this are a loop (QEMU refuses backing chains longer than 1000). */
    private static final int MAX_DEPTH = 4096;

    private BlockStatus() {
    }

    /**
     * The status of {@code [offset, offset+len)} as seen from {@code top} through filters and
     * backing layers, stopping before {@code base} (null: to the bottom). {@code len > 0}.
     */
    public static Extent above(BlockNode top, BlockNode base, long offset, long len) throws IOException {
        Depth d = walk(top, base, offset, len);
        // content a protocol layer does not know (see walk) is copied, never skipped: QEMU's
        // mirror would discard it on the target, which loses data on a HOLE-only NBD server
        return d.contentUnknown() ? new Extent(offset, d.extent().length(), Allocation.DATA) : d.extent();
    }

    /**
     * What {@link #walk} found: the status, and QEMU's depth of the layer that decided it
     * (0 when nothing in the chain allocates the range).
     */
    public record Depth(Extent extent, int depth, boolean contentUnknown) {
        Depth(Extent extent, int depth) {
            this(extent, depth, false);
        }
    }

    /**
     * The depth of the layer that provides {@code [offset, offset+len)} as seen from {@code top}
     * (QEMU's {@code bdrv_is_allocated_above(top, NULL, false, ...)}, the NBD context
     * {@code qemu:allocation-depth}): 0 when no layer of the chain allocates it, 1 when
     * {@code top} does, 2 its backing, and so on. The run returned is the same one
     * {@link #above} returns.
     * <p>
     * QEMU counts every node it asks, filters included: it asks a filter too, and a filter
     * answers with its filtered child's own status. So a filter (or a run of filters) right above
     * the allocating layer takes that layer's place in the count (data in an image under
     * {@code top}'s filter is at depth 1, its backing's at 3), which {@link #walk} reproduces.
     */
    public static Depth allocationDepth(BlockNode top, long offset, long len) throws IOException {
        return walk(top, null, offset, len);
    }

    /**
     * The one walk (bdrv_co_common_block_status_above): down filters and backing links, each
     * non-filter layer asked once; the depth counts every node passed as QEMU does.
     */
    private static Depth walk(BlockNode top, BlockNode base, long offset, long len) throws IOException {
        long n = len;
        int depth = 0;
        // 1-based depth of the first of the filters directly above the current layer, 0 if none:
        // QEMU's answer for that filter is this layer's status
        int filterRunStart = 0;
        for (BlockNode layer = top; layer != null && layer != base; layer = next(layer)) {
            if (++depth > MAX_DEPTH) {
                throw new IoError(Errno.ELOOP, "backing chain loop at node '" + layer.nodeName() + "'");
            }
            if (layer.driver().filtered() != null) {
                if (filterRunStart == 0) {
                    filterRunStart = depth;
                }
                continue; // a filter: what it shows is its child's
            }
            int shown = filterRunStart != 0 ? filterRunStart : depth;
            filterRunStart = 0;
            long size = layer.length();
            if (offset >= size) {
                return new Depth(new Extent(offset, n, Allocation.ZERO), shown);
            }
            Extent e = layer.status(offset, Math.min(n, size - offset));
            n = Math.min(n, e.length());
            if (e.allocation() != Allocation.UNALLOCATED) {
                return new Depth(new Extent(offset, n, e.allocation()), shown);
            }
            if (!layer.driver().supportsBacking() && layer.driver().backing() == null) {
                // bdrv_co_block_status: only a layer that can have a backing file reads its
                // unallocated ranges as zeroes; a protocol layer's "not allocated" (an NBD
                // server's HOLE without ZERO, an x-dirty-bitmap's dirty extent) holds data
                return new Depth(new Extent(offset, n, Allocation.UNALLOCATED), 0, true);
            }
        }
        return new Depth(new Extent(offset, n, Allocation.UNALLOCATED), 0);
    }

    /**
     * The status of the whole chain under {@code top} as a reader of {@code top} sees it: DATA,
     * or ZERO for anything that reads as zeroes (a zero cluster, a hole, nothing allocated
     * anywhere down the chain).
     */
    public static Extent readView(BlockNode top, long offset, long len) throws IOException {
        return readViewDetail(top, offset, len).extent();
    }

    /**
     * {@link #readView}, and whether the range is a hole whose content is not known to be zero
     * (a protocol layer said "not allocated" without "zero": {@code extent} is then DATA, to be
     * read). QEMU's NBD server reports such a range as HOLE without ZERO.
     */
    public record ReadView(Extent extent, boolean unknownHole) {
    }

    public static ReadView readViewDetail(BlockNode top, long offset, long len) throws IOException {
        Depth d = walk(top, null, offset, len);
        Extent e = d.extent();
        if (e.allocation() != Allocation.UNALLOCATED) {
            return new ReadView(e, false);
        }
        return d.contentUnknown() ? new ReadView(new Extent(offset, e.length(), Allocation.DATA), true)
                : new ReadView(new Extent(offset, e.length(), Allocation.ZERO), false);
    }

    /**
     * The status of {@code layer} alone, looking through filters above it (QEMU's
     * {@code bdrv_is_allocated} of a node whose filters are skipped): the first non-filter layer
     * under {@code layer} answers. Used by backup sync=top ("allocated in the top image").
     */
    public static Extent ofLayer(BlockNode layer, long offset, long len) throws IOException {
        BlockNode image = skipFilters(layer);
        return image.status(offset, len);
    }

    /** The first node at or under {@code node} that is not a filter (bdrv_skip_filters). */
    public static BlockNode skipFilters(BlockNode node) {
        BlockNode n = node;
        for (int depth = 0; n.driver().filtered() != null; depth++) {
            if (depth > MAX_DEPTH) {
                throw new IllegalStateException("filter loop at " + n);
            }
            n = n.driver().filtered();
        }
        return n;
    }

    /** QEMU's bdrv_filter_or_cow_bs(): a filter's child, else the backing node, else null. */
    public static BlockNode next(BlockNode layer) {
        BlockNode f = layer.driver().filtered();
        return f != null ? f : layer.driver().backing();
    }
}
