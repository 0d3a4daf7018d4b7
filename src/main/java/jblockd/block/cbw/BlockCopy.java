package jblockd.block.cbw;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.LongConsumer;

import jblockd.block.Allocation;
import jblockd.block.BlockNode;
import jblockd.block.BlockStatus;
import jblockd.block.Extent;
import jblockd.block.IoError;
import jblockd.qapi.IoOperation;

/**
 * The copy state shared by a backup job and its copy-before-write filter (QEMU
 * block/block-copy.c): a bitmap of clusters still to copy from {@code source} to
 * {@code target}, and the clusters being copied right now.
 *
 * <h2>Range locking (reference/backup.md §4)</h2>
 * A copy first <em>claims</em> clusters under the lock: a claimed cluster leaves the dirty
 * set and enters the in-flight set. Whoever needs a cluster that is in flight (a guest write,
 * or the background copy) waits for it to leave the in-flight set, and never copies it again.
 * A failed copy puts its clusters back into the dirty set. So the old data of every cluster is
 * read from the source exactly once before any guest write to it reaches the source, and a
 * guest write and a background copy of the same cluster never interleave.
 *
 * <h2>Sparseness (SPEC §7)</h2>
 * Ranges the source chain reports as zero or unallocated, and data buffers that are all
 * zeroes, are not written as data: skipped when the target is known to read as zeroes
 * ({@code targetReadsZero}: a freshly created image without backing file), otherwise written
 * as write-zeroes with unmap allowed. A raw target stays sparse.
 * <p>
 * Thread-safe. Buffers: at most {@link #MAX_CHUNK} bytes per request, sized to it, with the bytes
 * in flight bounded ({@link CopyBuffers}).
 */
public final class BlockCopy {
    /** One copy request reads and writes at most 1 MiB (QEMU block-copy without offload). */
    public static final int MAX_CHUNK = 1 << 20;
    /** The most one zero-skipping status query asks about (a bound on its cost, not on the skip). */
    static final long STATUS_WINDOW = 64L << 20;
    /**
     * Data written to the target between two write-back hints ({@link BlockNode#startWriteback}).
     * Without them the kernel holds the copied data in the page cache and the job's final flush
     * writes it all while nothing else happens (a third of a scattered incremental backup's time
     * here); with them the device writes while the copy reads.
     */
    static final long WRITEBACK_STEP = 8L << 20;

    /** A copy failure, with the side it happened on (BLOCK_JOB_ERROR.operation). */
    public static final class CopyError extends IoError {
        private static final long serialVersionUID = 1L;
        private final IoOperation operation;
        private final long offset;

        CopyError(IoOperation operation, long offset, IoError cause) {
            super(cause.errno(), cause.getMessage(), cause);
            this.operation = operation;
            this.offset = offset;
        }

        public IoOperation operation() {
            return operation;
        }

        public long offset() {
            return offset;
        }
    }

    /** A claimed run of clusters {@code [first, first + count)}. */
    public record Claim(long first, int count) {
    }

    private final BlockNode source;
    private final BlockNode target;
    private final long length;
    private final int clusterSize;
    private final long clusters;
    private final boolean targetReadsZero;
    private final int chunk;
    private volatile LongConsumer progress = n -> { };

    private final ReentrantLock lock = new ReentrantLock();
    private final Condition changed = lock.newCondition();
    private final BitSet dirty = new BitSet();
    private final BitSet inFlight = new BitSet();
    private final CopyBuffers buffers;
    private final ByteBuffer zeroes = ByteBuffer.allocateDirect(64 * 1024);
    private final java.util.concurrent.atomic.AtomicLong writtenSinceHint = new java.util.concurrent.atomic.AtomicLong();

    /**
     * @param clusterSize     copy granularity (backup: max(64 KiB, target cluster size))
     * @param chunk           maximum bytes per request (a multiple of clusterSize, ≤ 1 MiB)
     * @param maxBuffers      bound on requests in flight at once (memory cap)
     * @param targetReadsZero the target reads as zeroes wherever nothing is written
     */
    public BlockCopy(BlockNode source, BlockNode target, long length, int clusterSize, int chunk,
                     int maxBuffers, boolean targetReadsZero) {
        if (clusterSize <= 0 || Integer.bitCount(clusterSize) != 1) {
            throw new IllegalArgumentException("cluster size must be a power of two: " + clusterSize);
        }
        this.source = source;
        this.target = target;
        this.length = length;
        this.clusterSize = clusterSize;
        this.clusters = (length + clusterSize - 1) / clusterSize;
        if (clusters > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("image too large for cluster size " + clusterSize);
        }
        this.chunk = Math.max(clusterSize, Math.min(MAX_CHUNK, chunk) / clusterSize * clusterSize);
        this.targetReadsZero = targetReadsZero;
        // two chunks beyond the copies in flight, for guests' copy-before-writes
        int chunkUnits = this.chunk / clusterSize;
        this.buffers = new CopyBuffers(clusterSize, chunkUnits,
                (int) Math.min(Integer.MAX_VALUE, (long) (maxBuffers + 2) * chunkUnits));
        dirty.set(0, (int) clusters);
    }

    public long length() {
        return length;
    }

    public int clusterSize() {
        return clusterSize;
    }

    public int chunk() {
        return chunk;
    }

    public long clusterCount() {
        return clusters;
    }

    public BlockNode source() {
        return source;
    }

    public BlockNode target() {
        return target;
    }

    /** Called with the byte count of every successful copy (background or before-write). */
    public void onProgress(LongConsumer consumer) {
        this.progress = consumer;
    }

    /** Sets in {@code into} the clusters still to copy (copy-before-write's access set starts so). */
    public void copyDirtyInto(BitSet into) {
        lock.lock();
        try {
            into.or(dirty);
        } finally {
            lock.unlock();
        }
    }

    /** Bytes of the clusters still dirty. */
    public long dirtyBytes() {
        lock.lock();
        try {
            return dirtyBytesLocked();
        } finally {
            lock.unlock();
        }
    }

    /** Exact bytes of the dirty clusters: the last cluster of the image may be short. */
    private long dirtyBytesLocked() {
        long bytes = (long) dirty.cardinality() * clusterSize;
        if (clusters > 0 && dirty.get((int) clusters - 1)) {
            bytes -= clusters * clusterSize - length;
        }
        return bytes;
    }

    private long bytesOf(long clusterCount) {
        return Math.min(length, clusterCount * (long) clusterSize);
    }

    /** Byte length of a claim (the last cluster may be short). */
    public long bytes(Claim c) {
        long start = c.first() * clusterSize;
        long end = Math.min(length, (c.first() + c.count()) * (long) clusterSize);
        return end - start;
    }

    /**
     * sync=incremental|bitmap (QEMU's block_copy_set_copy_bitmap after
     * bdrv_dirty_bitmap_merge_internal): only clusters that a granule of {@code wanted} touches
     * stay to be copied; the bitmap's granules are rounded out to whole clusters. Call before the
     * copy starts (under the drain that fixes the point in time). Returns the bytes dropped.
     */
    public long restrictTo(jblockd.block.bitmap.DirtyBitmap wanted) {
        lock.lock();
        try {
            BitSet keep = new BitSet();
            long pos = 0;
            long[] run;
            while ((run = wanted.nextDirtyRun(pos, Long.MAX_VALUE)) != null) {
                int first = (int) (run[0] / clusterSize);
                int end = (int) Math.min(clusters, (run[0] + run[1] + clusterSize - 1) / clusterSize);
                keep.set(first, end);
                pos = run[0] + run[1];
            }
            long before = dirtyBytesLocked();
            dirty.and(keep);
            return before - dirtyBytesLocked();
        } finally {
            lock.unlock();
        }
    }

    /**
     * Marks in {@code into} every byte range still to be copied (QEMU merges block-copy's copy
     * bitmap into the sync bitmap when a bitmap-mode=always backup failed).
     */
    public void markRemaining(jblockd.block.bitmap.DirtyBitmap into) {
        lock.lock();
        try {
            for (int c = dirty.nextSetBit(0); c >= 0 && c < clusters; ) {
                int end = dirty.nextClearBit(c);
                long start = (long) c * clusterSize;
                into.mark(start, Math.min(length, (long) end * clusterSize) - start);
                c = dirty.nextSetBit(end);
            }
        } finally {
            lock.unlock();
        }
    }

    /** Clears dirty clusters of {@code [offset, offset+len)} that need no copy (sync=top). Returns bytes dropped. */
    public long reset(long offset, long len) {
        int first = (int) ((offset + clusterSize - 1) / clusterSize);
        long endByte = offset + len;
        int end = (int) (endByte >= length ? clusters : endByte / clusterSize);
        if (end <= first) {
            return 0;
        }
        lock.lock();
        try {
            long dropped = 0;
            for (int c = dirty.nextSetBit(first); c >= 0 && c < end; c = dirty.nextSetBit(c + 1)) {
                if (!inFlight.get(c)) {
                    dirty.clear(c);
                    dropped += bytesOf(c + 1) - (long) c * clusterSize;
                }
            }
            return dropped;
        } finally {
            lock.unlock();
        }
    }

    /**
     * Fast path of the background copy over a fresh target: if the first dirty cluster at or
     * after {@code from} starts a range the source chain reports as zero/unallocated, the whole
     * range is dropped from the bitmap at once (a fresh target already reads zeroes there) and
     * counted as progress. Returns the cluster to continue from.
     * <p>
     * Safe against guest writes: a write always claims (and copies) a dirty cluster before it
     * changes the source, so a cluster still dirty when it is dropped here still holds the zeroes
     * the status reported, and a cluster a write claimed first is simply no longer dirty.
     */
    public long skipZeroes(long from) throws CopyError {
        if (!targetReadsZero || from >= clusters) {
            return from;
        }
        int c;
        int runEnd;
        lock.lock();
        try {
            c = dirty.nextSetBit((int) from);
            runEnd = c < 0 ? -1 : dirty.nextClearBit(c);
        } finally {
            lock.unlock();
        }
        if (c < 0) {
            return clusters;
        }
        long pos = (long) c * clusterSize;
        // Asked for the dirty run only, and at most STATUS_WINDOW: a driver's status costs in
        // proportion to the extent it reports, and this runs once per claim, so asking for the
        // rest of the disk each time made a scattered incremental backup quadratic.
        long ask = Math.min(Math.min(length, (long) runEnd * clusterSize) - pos, STATUS_WINDOW);
        Extent e;
        try {
            e = BlockStatus.readView(source, pos, ask);
        } catch (IOException ex) {
            throw new CopyError(IoOperation.READ, pos, IoError.wrap(ex));
        }
        if (e.allocation() == Allocation.DATA) {
            return c;
        }
        long dropped = reset(pos, e.length());
        if (dropped > 0) {
            progress.accept(dropped);
        }
        long endCluster = e.end() >= length ? clusters : e.end() / clusterSize;
        return Math.max(c + 1, endCluster);
    }

    /**
     * Claims the next run of dirty clusters at or after cluster {@code from}, up to one chunk.
     * Null when no dirty cluster is left at or after {@code from} (clusters in flight are
     * someone else's).
     */
    public Claim claimNext(long from) {
        lock.lock();
        try {
            int c = from >= clusters ? -1 : dirty.nextSetBit((int) from);
            while (c >= 0 && inFlight.get(c)) {
                c = dirty.nextSetBit(c + 1);
            }
            if (c < 0 || c >= clusters) {
                return null;
            }
            int max = chunk / clusterSize;
            int n = 0;
            while (n < max && c + n < clusters && dirty.get(c + n) && !inFlight.get(c + n)) {
                n++;
            }
            take(c, n);
            return new Claim(c, n);
        } finally {
            lock.unlock();
        }
    }

    private void take(int first, int n) {
        dirty.clear(first, first + n);
        inFlight.set(first, first + n);
    }

    /** Ends a claim: on failure its clusters are dirty again. Wakes waiters either way. */
    public void release(Claim c, boolean success) {
        lock.lock();
        try {
            int first = (int) c.first();
            inFlight.clear(first, first + c.count());
            if (!success) {
                dirty.set(first, first + c.count());
            }
            changed.signalAll();
        } finally {
            lock.unlock();
        }
    }

    /** True while clusters are dirty or in flight. */
    public boolean hasWork() {
        lock.lock();
        try {
            return !dirty.isEmpty() || !inFlight.isEmpty();
        } finally {
            lock.unlock();
        }
    }

    /** Waits until no copy is in flight. */
    public void awaitIdle() {
        lock.lock();
        try {
            while (!inFlight.isEmpty()) {
                changed.awaitUninterruptibly();
            }
        } finally {
            lock.unlock();
        }
    }

    /**
     * Copies one claimed run source → target (the claim stays held). Reports progress on
     * success. Callers use {@link #copyAndRelease}, which ends the claim on every path.
     *
     * @throws CopyError with the side (read/write) that failed
     */
    void copy(Claim c) throws CopyError {
        long start = c.first() * clusterSize;
        long end = start + bytes(c);
        ByteBuffer buf = buffers.take(c.count());
        try {
            long pos = start;
            while (pos < end) {
                Extent ext;
                try {
                    ext = BlockStatus.readView(source, pos, end - pos);
                } catch (IOException e) {
                    throw new CopyError(IoOperation.READ, pos, IoError.wrap(e));
                }
                long n = Math.min(ext.length(), end - pos);
                if (ext.allocation() != Allocation.DATA) {
                    writeZeroes(pos, n);
                } else {
                    buf.clear().limit((int) n);
                    try {
                        source.read(pos, buf);
                    } catch (IOException e) {
                        throw new CopyError(IoOperation.READ, pos, IoError.wrap(e));
                    }
                    buf.flip();
                    if (isZero(buf)) {
                        writeZeroes(pos, n);
                    } else {
                        try {
                            target.write(pos, buf, false);
                            hintWriteback(n);
                        } catch (IOException e) {
                            throw new CopyError(IoOperation.WRITE, pos, IoError.wrap(e));
                        }
                    }
                }
                pos += n;
            }
        } finally {
            buffers.give(buf);
        }
        progress.accept(end - start);
    }

    /**
     * Copies a claim and ends it, whatever happens: released as copied on success, dirty again
     * on any throwable (an I/O error, or a driver's RuntimeException or Error). A claim left in
     * flight would make every guest write to its clusters wait forever, so every copy goes
     * through here.
     *
     * @throws CopyError with the side (read/write) that failed
     */
    public void copyAndRelease(Claim c) throws CopyError {
        boolean copied = false;
        try {
            copy(c);
            copied = true;
        } finally {
            release(c, copied);
        }
    }

    /** Every {@link #WRITEBACK_STEP} bytes written, one writer asks the target to start writing back. */
    private void hintWriteback(long written) throws IOException {
        long total = writtenSinceHint.addAndGet(written);
        if (total >= WRITEBACK_STEP && writtenSinceHint.compareAndSet(total, 0)) {
            target.startWriteback();
        }
    }

    private void writeZeroes(long pos, long n) throws CopyError {
        if (targetReadsZero) {
            return;
        }
        try {
            target.writeZeroes(pos, n, true);
        } catch (IOException e) {
            throw new CopyError(IoOperation.WRITE, pos, IoError.wrap(e));
        }
    }

    private boolean isZero(ByteBuffer buf) {
        int pos = buf.position();
        int lim = buf.limit();
        while (pos < lim) {
            int n = Math.min(zeroes.capacity(), lim - pos);
            if (buf.slice(pos, n).mismatch(zeroes.slice(0, n)) != -1) {
                return false;
            }
            pos += n;
        }
        return true;
    }

    /**
     * Copies {@code claims} in order; at the first failure (of any kind) the claims not yet
     * copied are released dirty again and the failure is thrown. Every claim is ended either way.
     */
    private void copyAllOrRelease(List<Claim> claims) throws CopyError {
        int next = 0;
        try {
            while (next < claims.size()) {
                copyAndRelease(claims.get(next++));
            }
        } finally {
            while (next < claims.size()) {
                release(claims.get(next++), false);
            }
        }
    }

    /**
     * The copy-before-write step of a guest write to {@code [offset, offset+len)}: copies every
     * dirty cluster of the range first and waits for copies of it already in flight. When this
     * returns normally, no cluster of the range needs its old data any more.
     *
     * @throws CopyError when copying the old data failed (the guest write must then fail)
     */
    public void copyBeforeWrite(long offset, long len) throws CopyError {
        if (len <= 0) {
            return;
        }
        int first = (int) (offset / clusterSize);
        int end = (int) Math.min(clusters, (offset + len + clusterSize - 1) / clusterSize);
        while (true) {
            List<Claim> mine = new ArrayList<>();
            lock.lock();
            try {
                boolean waiting = false;
                int c = first;
                while (c < end) {
                    if (inFlight.get(c)) {
                        waiting = true;
                        c++;
                    } else if (dirty.get(c)) {
                        int n = 0;
                        int max = chunk / clusterSize;
                        while (n < max && c + n < end && dirty.get(c + n) && !inFlight.get(c + n)) {
                            n++;
                        }
                        take(c, n);
                        mine.add(new Claim(c, n));
                        c += n;
                    } else {
                        c++;
                    }
                }
                if (mine.isEmpty()) {
                    if (!waiting) {
                        return;
                    }
                    // Someone else copies these clusters: wait for them, then look again
                    // (a failed copy makes them dirty again, and then they are ours).
                    changed.awaitUninterruptibly();
                    continue;
                }
            } finally {
                lock.unlock();
            }
            copyAllOrRelease(mine);
        }
    }
}
