package jblockd.block.bitmap;

import java.util.BitSet;

/**
 * A dirty bitmap over a byte range (QEMU block/dirty-bitmap.c with an HBitmap): one bit per
 * {@code granularity} bytes, set when any byte of the granule was written. Marking rounds out
 * to whole granules; clearing also clears every granule the range touches, so callers clear
 * exactly the granule-aligned range they are about to copy (mirror clears before it reads the
 * source, so a guest write that completes afterwards marks the granule again).
 * <p>
 * Thread-safe: guest writes mark from connection threads while a job clears and iterates.
 */
public final class DirtyBitmap {
    private final int granularity;
    private final int shift;
    private long length;
    private final BitSet bits = new BitSet();
    private long dirtyGranules;

    /** @param granularity a power of two, at least 1 */
    public DirtyBitmap(long length, int granularity) {
        if (granularity <= 0 || Integer.bitCount(granularity) != 1) {
            throw new IllegalArgumentException("granularity must be a power of two: " + granularity);
        }
        if (length < 0) {
            throw new IllegalArgumentException("negative length");
        }
        if ((length + granularity - 1) / granularity > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("bitmap too large for granularity " + granularity);
        }
        this.granularity = granularity;
        this.shift = Integer.numberOfTrailingZeros(granularity);
        this.length = length;
    }

    public int granularity() {
        return granularity;
    }

    public synchronized long length() {
        return length;
    }

    private int granules() {
        return (int) ((length + granularity - 1) >>> shift);
    }

    /** Marks every granule that {@code [offset, offset+len)} touches (clipped to the length). */
    public synchronized void mark(long offset, long len) {
        set(offset, len, true);
    }

    /** Marks everything (mirror sync=full's initial state). */
    public synchronized void markAll() {
        mark(0, length);
    }

    /** Clears every granule that {@code [offset, offset+len)} touches. */
    public synchronized void clear(long offset, long len) {
        set(offset, len, false);
    }

    /** Sets the granules {@code [offset, offset+len)} touches, keeping the dirty count exact. */
    private void set(long offset, long len, boolean dirty) {
        int[] r = range(offset, len);
        if (r == null) {
            return;
        }
        int before = bits.get(r[0], r[1]).cardinality();
        bits.set(r[0], r[1], dirty);
        dirtyGranules += (dirty ? r[1] - r[0] : 0) - before;
    }

    public synchronized boolean isDirty(long offset) {
        if (offset < 0 || offset >= length) {
            return false;
        }
        return bits.get((int) (offset >>> shift));
    }

    /** True when any granule of the range is dirty. */
    public synchronized boolean anyDirty(long offset, long len) {
        int[] r = range(offset, len);
        if (r == null) {
            return false;
        }
        int next = bits.nextSetBit(r[0]);
        return next >= 0 && next < r[1];
    }

    /** Dirty bytes: dirty granules times the granularity, the last one clipped to the length. */
    public synchronized long dirtyBytes() {
        if (dirtyGranules == 0) {
            return 0;
        }
        long bytes = dirtyGranules << shift;
        int last = granules() - 1;
        if (last >= 0 && bits.get(last)) {
            bytes -= ((long) granules() << shift) - length;
        }
        return bytes;
    }

    public synchronized boolean isClean() {
        return dirtyGranules == 0;
    }

    /**
     * The first run of dirty granules starting at or after {@code from}, at most {@code maxLen}
     * bytes (rounded down to whole granules, at least one granule), clipped to the length; null
     * when nothing at or after {@code from} is dirty.
     *
     * @return {@code {offset, length}}
     */
    public synchronized long[] nextDirtyRun(long from, long maxLen) {
        if (from >= length || dirtyGranules == 0) {
            return null;
        }
        int start = bits.nextSetBit((int) (Math.max(0, from) >>> shift));
        if (start < 0 || start >= granules()) {
            return null;
        }
        int end = bits.nextClearBit(start);
        end = Math.min(end, granules());
        long maxGranules = Math.max(1, maxLen >>> shift);
        end = (int) Math.min(end, start + maxGranules);
        long off = (long) start << shift;
        long endByte = Math.min(length, (long) end << shift);
        return new long[] {off, endByte - off};
    }

    /** Changes the covered length (a growing image); granules past the new end are dropped. */
    public synchronized void resize(long newLength) {
        if (newLength < length) {
            int from = (int) ((newLength + granularity - 1) >>> shift);
            clear((long) from << shift, length - ((long) from << shift));
        }
        length = newLength;
    }

    private int[] range(long offset, long len) {
        if (len <= 0 || offset >= length || offset < 0) {
            return null;
        }
        long end = Math.min(length, offset + len);
        int a = (int) (offset >>> shift);
        int b = (int) ((end + granularity - 1) >>> shift);
        return new int[] {a, b};
    }
}
