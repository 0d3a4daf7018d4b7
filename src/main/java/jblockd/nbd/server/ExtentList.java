package jblockd.nbd.server;

import java.util.Arrays;

import jblockd.block.bitmap.DirtyBitmap;

/**
 * The extents of one NBD_REPLY_TYPE_BLOCK_STATUS chunk (QEMU nbd/server.c
 * {@code NBDExtentArray}): runs of (u32 length, u32 flags), a run of the same flags as the last
 * one extending it, at most {@code capacity} runs. Once a run does not fit, the list is
 * {@link #full() full} and takes no more: the reply then covers less than the request, which
 * proto.md allows (the client asks again from where it ends). Not thread-safe: one per chunk.
 */
final class ExtentList {
    /** QEMU's NBD_MAX_BLOCK_STATUS_EXTENTS: 1 MiB of extent descriptors. */
    static final int MAX_EXTENTS = 1024 * 1024 / 8;
    private static final long U32_MAX = 0xffffffffL;

    private final int capacity;
    private long[] lengths = new long[8];
    private int[] flags = new int[8];
    private int count;
    private long total;
    private boolean full;

    /** {@code oneExtent}: NBD_CMD_FLAG_REQ_ONE, a single extent. */
    static ExtentList forRequest(boolean oneExtent) {
        return new ExtentList(oneExtent ? 1 : MAX_EXTENTS);
    }

    ExtentList(int capacity) {
        if (capacity < 1) {
            throw new IllegalArgumentException("capacity " + capacity);
        }
        this.capacity = capacity;
    }

    /**
     * Adds a run (nbd_extent_array_add); a zero length is nothing.
     *
     * @return false when the run did not fit (the list is full from now on)
     */
    boolean add(long length, int flag) {
        if (full) {
            throw new IllegalStateException("extent list is full");
        }
        if (length == 0) {
            return true;
        }
        if (count > 0 && flags[count - 1] == flag && lengths[count - 1] + length <= U32_MAX) {
            lengths[count - 1] += length;
            total += length;
            return true;
        }
        if (count == capacity) {
            full = true;
            return false;
        }
        if (count == lengths.length) {
            lengths = Arrays.copyOf(lengths, Math.min(capacity, count * 2));
            flags = Arrays.copyOf(flags, lengths.length);
        }
        lengths[count] = length;
        flags[count] = flag;
        count++;
        total += length;
        return true;
    }

    boolean full() {
        return full;
    }

    int count() {
        return count;
    }

    long length(int i) {
        return lengths[i];
    }

    int flags(int i) {
        return flags[i];
    }

    /** The runs as the wire has them: u32 length, u32 flags, per run (NbdWriter#chunkBlockStatus). */
    int[] toPairs() {
        int[] out = new int[2 * count];
        for (int i = 0; i < count; i++) {
            out[2 * i] = (int) lengths[i];
            out[2 * i + 1] = flags[i];
        }
        return out;
    }

    /** Bytes the runs cover. */
    long total() {
        return total;
    }

    /**
     * The runs of {@code bits} over {@code [offset, offset+length)}: dirty ({@code dirtyFlag})
     * and clean (0) granules, each run clipped to the request at both ends; anything past the
     * bitmap's own length is clean (QEMU's bitmap_to_extents over
     * bdrv_dirty_bitmap_next_dirty_area).
     */
    void addBitmap(DirtyBitmap bits, long offset, long length, int dirtyFlag) {
        long end = offset + length;
        long pos = offset;
        while (pos < end) {
            long[] run = bits.nextDirtyRun(pos, end - pos);
            if (run == null) {
                break;
            }
            // a run starts on a granule boundary, possibly before pos; it may go past end
            long start = Math.max(run[0], pos);
            long stop = Math.min(run[0] + run[1], end);
            if (start >= end) {
                break;
            }
            if (!add(start - pos, 0) || !add(stop - start, dirtyFlag)) {
                return;
            }
            pos = stop;
        }
        add(end - pos, 0);
    }
}
