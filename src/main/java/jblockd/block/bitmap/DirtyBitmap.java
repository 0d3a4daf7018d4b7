package jblockd.block.bitmap;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.BitSet;
import java.util.HexFormat;
import java.util.concurrent.atomic.LongAdder;

/**
 * A dirty bitmap over a byte range (QEMU block/dirty-bitmap.c with an HBitmap): one bit per
 * {@code granularity} bytes, set when any byte of the granule was written. Marking rounds out
 * to whole granules; clearing also clears every granule the range touches, so callers clear
 * exactly the granule-aligned range they are about to copy (mirror clears before it reads the
 * source, so a guest write that completes afterwards marks the granule again).
 * <p>
 * Memory: one flat {@code long[]} of exactly one bit per granule (1 TiB at 64 KiB granularity:
 * 2 MiB, i.e. 2 KiB per GiB), allocated at construction. Bit {@code n} is bit {@code n % 64} of
 * word {@code n / 64}, which is also QEMU's in-memory layout on a little-endian host, so
 * {@link #sha256()} hashes the same bytes as QEMU's {@code hbitmap_sha256()}.
 * <p>
 * Thread-safety: {@link #mark}, {@link #clear}, {@link #or} and every query may run from many
 * threads at once (guest writes mark from connection threads while a job clears and iterates):
 * each word changes by one atomic read-modify-write and every flipped bit is counted. Only
 * {@link #resize} and {@link #restore} need the caller to exclude every other use of the bitmap
 * ({@link NodeBitmaps} does, with its mark lock and monitor).
 */
public final class DirtyBitmap {
    private static final VarHandle WORDS = MethodHandles.arrayElementVarHandle(long[].class);
    /** Java arrays stop a little short of Integer.MAX_VALUE elements. */
    private static final long MAX_WORDS = Integer.MAX_VALUE - 16;

    private final long granularity;
    private final int shift;
    private volatile long length;
    /** Granule bits; at least as long as needed for {@link #length} (growth keeps spare capacity). */
    private volatile long[] words;
    /**
     * Set bits. A LongAdder: every write into a clean granule adds to it, from many threads at
     * once, and one shared AtomicLong would be a contended cache line on the write path. Its sum
     * is exact whenever no mark or clear is running (a drained node, a frozen bitmap); while
     * some are, it may lag the bits by those few.
     */
    private final LongAdder dirtyGranules = new LongAdder();

    /**
     * @param granularity a power of two, at least 1 (QMP bitmaps: 512 .. 2^31)
     * @throws IllegalArgumentException when the granularity is not a power of two, the length is
     *                                  negative, or the bit count does not fit a Java array
     *                                  (about 2^37 granules: 64 TiB at 512 bytes per bit)
     */
    public DirtyBitmap(long length, long granularity) {
        if (granularity <= 0 || Long.bitCount(granularity) != 1) {
            throw new IllegalArgumentException("granularity must be a power of two: " + granularity);
        }
        if (length < 0) {
            throw new IllegalArgumentException("negative length");
        }
        this.granularity = granularity;
        this.shift = Long.numberOfTrailingZeros(granularity);
        this.words = new long[checkedWords(length)];
        this.length = length;
    }

    /** A bitmap holding {@code bits} (bit n = granule n; bits past the length are dropped). */
    public static DirtyBitmap of(long length, long granularity, BitSet bits) {
        DirtyBitmap b = new DirtyBitmap(length, granularity);
        long granules = b.granules(length);
        int i = bits.nextSetBit(0);
        while (i >= 0 && i < granules) {
            int end = bits.nextClearBit(i);
            b.setGranules(i, Math.min(end, granules), true);
            i = bits.nextSetBit(end);
        }
        return b;
    }

    private int checkedWords(long len) {
        long granules = granules(len);
        long w = (granules + 63) >>> 6;
        if (w > MAX_WORDS) {
            throw new IllegalArgumentException("a bitmap of granularity " + granularity + " over " + len
                    + " bytes needs " + granules + " bits, more than " + (MAX_WORDS * 64) + " (use a coarser granularity)");
        }
        return (int) w;
    }

    private long granules(long len) {
        return len == 0 ? 0 : ((len - 1) >>> shift) + 1;
    }

    public long granularity() {
        return granularity;
    }

    public long length() {
        return length;
    }

    /** Marks every granule that {@code [offset, offset+len)} touches (clipped to the length). */
    public void mark(long offset, long len) {
        long l = length;
        if (len > 0 && offset >= 0 && offset < l) {
            setGranules(offset >>> shift, granules(len > l - offset ? l : offset + len), true);
        }
    }

    /**
     * True when every granule {@code [offset, offset+len)} touches is dirty already (and the range
     * lies within the bitmap): marking it would change nothing. Reads each word once; a word
     * cleared after it was read counts as cleared after this range's mark.
     */
    public boolean allDirty(long offset, long len) {
        if (len <= 0 || offset < 0 || offset > length - len) {
            return false;
        }
        long from = offset >>> shift;
        long to = granules(offset + len);
        long[] w = words;
        int first = (int) (from >>> 6);
        int last = (int) ((to - 1) >>> 6);
        if (last >= w.length) {
            return false; // resized meanwhile: the locked path decides
        }
        for (int i = first; i <= last; i++) {
            long mask = -1L;
            if (i == first) {
                mask &= -1L << (from & 63);
            }
            if (i == last) {
                mask &= -1L >>> (63 - ((to - 1) & 63));
            }
            if (((long) WORDS.getAcquire(w, i) & mask) != mask) {
                return false;
            }
        }
        return true;
    }

    /** Marks everything (mirror sync=full's initial state). */
    public void markAll() {
        mark(0, length);
    }

    /** Clears every granule that {@code [offset, offset+len)} touches. */
    public void clear(long offset, long len) {
        long l = length;
        if (len > 0 && offset >= 0 && offset < l) {
            setGranules(offset >>> shift, granules(len > l - offset ? l : offset + len), false);
        }
    }

    /** Clears every granule (block-dirty-bitmap-clear). */
    public void clearAll() {
        setGranules(0, granules(length), false);
    }

    /**
     * Sets or clears granules {@code [from, to)}, one atomic read-modify-write per word; the
     * count changes by exactly the bits that flipped. A word whose bits are already as asked
     * is only read: a guest write into an already dirty granule costs no store (a racing clear
     * after that read is harmless, the write's data landed before the mark was attempted, so a
     * copy that starts after the clear reads it).
     */
    private void setGranules(long from, long to, boolean dirty) {
        if (from >= to) {
            return;
        }
        long[] w = words;
        int first = (int) (from >>> 6);
        int last = (int) ((to - 1) >>> 6);
        long delta = 0;
        for (int i = first; i <= last; i++) {
            long mask = -1L;
            if (i == first) {
                mask &= -1L << (from & 63);
            }
            if (i == last) {
                mask &= -1L >>> (63 - ((to - 1) & 63));
            }
            long cur = (long) WORDS.getAcquire(w, i);
            if (dirty) {
                if ((cur & mask) == mask) {
                    continue;
                }
                long old = (long) WORDS.getAndBitwiseOr(w, i, mask);
                delta += Long.bitCount(mask & ~old);
            } else {
                if ((cur & mask) == 0) {
                    continue;
                }
                long old = (long) WORDS.getAndBitwiseAnd(w, i, ~mask);
                delta -= Long.bitCount(mask & old);
            }
        }
        if (delta != 0) {
            dirtyGranules.add(delta);
        }
    }

    public boolean isDirty(long offset) {
        if (offset < 0 || offset >= length) {
            return false;
        }
        long g = offset >>> shift;
        return (((long) WORDS.getAcquire(words, (int) (g >>> 6)) >>> (g & 63)) & 1) != 0;
    }

    /** True when any granule of the range is dirty. */
    public boolean anyDirty(long offset, long len) {
        long l = length;
        if (len <= 0 || offset < 0 || offset >= l) {
            return false;
        }
        return nextSet(offset >>> shift, granules(len > l - offset ? l : offset + len)) >= 0;
    }

    /** Dirty granules (QEMU's hbitmap count before the granularity shift). */
    public long dirtyGranules() {
        return dirtyGranules.sum();
    }

    /**
     * Dirty granules times the granularity, not clipped at the end: QEMU's
     * {@code bdrv_get_dirty_count()}, the {@code count} of query-named-block-nodes (a write into
     * the last, partial granule counts a whole granule).
     */
    public long count() {
        return dirtyGranules.sum() << shift;
    }

    /** Dirty bytes: dirty granules times the granularity, the last one clipped to the length. */
    public long dirtyBytes() {
        long n = dirtyGranules.sum();
        if (n == 0) {
            return 0;
        }
        long len = length;
        long bytes = n << shift;
        long last = granules(len) - 1;
        if (last >= 0 && isDirty(last << shift)) {
            bytes -= ((last + 1) << shift) - len;
        }
        return bytes;
    }

    public boolean isClean() {
        return dirtyGranules.sum() == 0;
    }

    /**
     * The first run of dirty granules starting at or after {@code from}, at most {@code maxLen}
     * bytes (rounded down to whole granules, at least one granule), clipped to the length; null
     * when nothing at or after {@code from} is dirty.
     *
     * @return {@code {offset, length}}
     */
    public long[] nextDirtyRun(long from, long maxLen) {
        long len = length;
        if (from >= len || dirtyGranules.sum() == 0) {
            return null;
        }
        long granules = granules(len);
        long start = nextSet(Math.max(0, from) >>> shift, granules);
        if (start < 0) {
            return null;
        }
        long maxGranules = Math.max(1, maxLen >>> shift);
        long limit = start + maxGranules < 0 ? granules : Math.min(granules, start + maxGranules);
        long end = nextClear(start, limit);
        long off = start << shift;
        long endByte = Math.min(len, end << shift);
        return new long[] {off, endByte - off};
    }

    /** First set granule in {@code [from, to)}, or -1. */
    private long nextSet(long from, long to) {
        long[] w = words;
        for (long g = from; g < to; ) {
            int i = (int) (g >>> 6);
            long bits = ((long) WORDS.getAcquire(w, i)) & (-1L << (g & 63));
            if (bits != 0) {
                long found = ((long) i << 6) + Long.numberOfTrailingZeros(bits);
                return found < to ? found : -1;
            }
            g = (long) (i + 1) << 6;
        }
        return -1;
    }

    /** First clear granule in {@code [from, to)}, or {@code to}. */
    private long nextClear(long from, long to) {
        long[] w = words;
        for (long g = from; g < to; ) {
            int i = (int) (g >>> 6);
            long bits = ~((long) WORDS.getAcquire(w, i)) & (-1L << (g & 63));
            if (bits != 0) {
                return Math.min(to, ((long) i << 6) + Long.numberOfTrailingZeros(bits));
            }
            g = (long) (i + 1) << 6;
        }
        return to;
    }

    /**
     * ORs {@code src} into this bitmap (block-dirty-bitmap-merge). Granularities may differ: a
     * source granule marks every target granule it overlaps (a finer source rounds out to this
     * bitmap's granules, as QEMU's hbitmap_merge does). Bytes past this bitmap's length are
     * ignored; callers check equal sizes first, as QEMU does.
     */
    public void or(DirtyBitmap src) {
        if (src == this) {
            return;
        }
        if (src.granularity == granularity) {
            long granules = Math.min(granules(length), src.granules(src.length));
            long g = src.nextSet(0, granules);
            while (g >= 0) {
                long end = src.nextClear(g, granules);
                setGranules(g, end, true);
                g = end >= granules ? -1 : src.nextSet(end, granules);
            }
            return;
        }
        long srcLen = src.length;
        for (long[] run = src.nextDirtyRun(0, Long.MAX_VALUE); run != null;
             run = src.nextDirtyRun(run[0] + run[1], Long.MAX_VALUE)) {
            mark(run[0], run[1]);
            if (run[0] + run[1] >= srcLen) {
                break;
            }
        }
    }

    /** An independent copy of the bits (a transaction's undo state, a stored snapshot). */
    public DirtyBitmap copy() {
        DirtyBitmap c = new DirtyBitmap(length, granularity);
        c.or(this);
        return c;
    }

    /**
     * Makes this bitmap's bits exactly {@code saved}'s (same length and granularity): the undo
     * of a clear or merge. Needs exclusive access.
     */
    public void restore(DirtyBitmap saved) {
        if (saved.granularity != granularity || saved.length != length) {
            throw new IllegalArgumentException("restore from a bitmap of another shape");
        }
        clearAll();
        or(saved);
    }

    /** The bits as a BitSet (bit n = granule n): qcow2's on-disk order is its toByteArray(). */
    public BitSet toBitSet() {
        long[] w = words;
        int n = (int) ((granules(length) + 63) >>> 6);
        long[] copy = new long[n];
        for (int i = 0; i < n; i++) {
            copy[i] = (long) WORDS.getAcquire(w, i);
        }
        return BitSet.valueOf(copy);
    }

    /**
     * QEMU's {@code hbitmap_sha256()} (x-debug-block-dirty-bitmap-sha256): SHA-256 of the
     * lowest HBitmap level, i.e. {@code max(1, ceil(granules / 64))} 64-bit words in host
     * (little-endian) byte order, as lowercase hex.
     */
    public String sha256() {
        long[] w = words;
        int n = (int) Math.max(1, (granules(length) + 63) >>> 6);
        ByteBuffer buf = ByteBuffer.allocate(n * 8).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < n; i++) {
            buf.putLong(i < w.length ? (long) WORDS.getAcquire(w, i) : 0);
        }
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(buf.array()));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is part of every JDK", e);
        }
    }

    /**
     * Changes the covered length (a growing node: QEMU's bdrv_dirty_bitmap_truncate): the bits
     * are kept and the new area is clean; shrinking drops the granules past the new end. Needs
     * exclusive access (no mark, clear or query may run meanwhile).
     *
     * @throws IllegalArgumentException when the new length needs more bits than an array holds
     */
    public void resize(long newLength) {
        if (newLength < 0) {
            throw new IllegalArgumentException("negative length");
        }
        long old = length;
        if (newLength < old) {
            long from = granules(newLength);
            setGranules(from, granules(old), false);
        }
        int need = checkedWords(newLength);
        if (need > words.length) {
            // geometric growth: a file node that grows by a cluster per allocating write does not
            // copy its bitmaps on every write
            long[] grown = new long[(int) Math.min(MAX_WORDS, Math.max(need, (long) words.length * 2))];
            System.arraycopy(words, 0, grown, 0, words.length);
            words = grown;
        }
        length = newLength;
    }
}
