package jblockd.block.cbw;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
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
 *
 * <h2>The save buffer: copy-before-write that does not wait on the target (issue 17)</h2>
 * With a save bound ({@code saveBytes > 0}), a guest's copy-before-write reads the old data of its
 * clusters from the source into a buffer of its own and returns: the guest write goes on at once,
 * and a drainer ({@link #drainOne}, run by the backup job) writes the buffer to the target later,
 * oldest first. Such clusters are <em>saved</em>: neither dirty (nobody copies them again) nor in
 * flight (nobody waits for them), so a range's old data still reaches the target exactly once. When
 * the bound is used up, a copy-before-write copies synchronously as without a buffer (counted as a
 * fallback): old data is never dropped to make room. A saved entry whose write fails stays held and
 * the failure waits in {@link #drainError} for the job's on-target-error policy; no drain is tried
 * again until {@link #retryDrains}. The snapshot view reads saved clusters from the buffer
 * ({@link #readSaved}), since the target does not hold them yet.
 *
 * <h2>Guests first</h2>
 * The filter counts the guest requests it passes ({@link #guestBegin}/{@link #guestEnd}). A
 * background chunk copy that finds guest requests in flight waits before it reads the source
 * (before it claims anything) until they are all done or {@link #GUEST_TURN} of them completed, so
 * a guest's request queued
 * with the job's copies is served first even when the job runs unlimited ({@code speed=0}), and
 * the job still moves on under a guest that never stops (and after {@link #MAX_YIELD_NANOS} at
 * most). Saved old data waiting for the target is the guests' too: the background copy also
 * waits while the save queue holds entries (the drain goes ahead of the sequential copy). Without
 * that rule an unlimited job's chunk writes took the target from the drain, the buffer filled
 * and guest writes fell back to the synchronous copy (cbw-bench, speed=0: guests at 0.13 of
 * alone with a 30 ms p99, 0.3 and 7 ms with it). Copy-before-writes and drains are the guest's own
 * and never wait here.
 * <p>
 * Thread-safe. Buffers: at most {@link #MAX_CHUNK} bytes per request, sized to it, with the bytes
 * in flight bounded ({@link CopyBuffers}); the save buffer is a second bounded pool.
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
     * here); with them the device writes while the copy reads. Not while guests write through
     * the filter: a whole-file write-back queues megabytes on the device ahead of the guest's own
     * writes and flushes (cbw-bench, guest 64 KiB write throughput during a 32 MiB/s backup as a
     * share of alone: 0.31 with hints, 0.39 with none at all, 0.35 with this rule in another
     * run), and the kernel's own pace is the better neighbour then.
     */
    static final long WRITEBACK_STEP = 8L << 20;

    /** Guest requests a background copy lets complete before it goes on regardless. */
    static final int GUEST_TURN = 8;
    /**
     * The longest a background copy yields: a guest request may wait far longer than its own I/O
     * (held by a device's werror=stop until {@code cont}), and the job must not stall behind it.
     */
    static final long MAX_YIELD_NANOS = 20_000_000L;

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

    /**
     * The save buffer's use: its bound and the bytes held now (bytes), the copy-before-writes
     * that were saved and those that found it full and copied synchronously (counts).
     */
    public record SaveUse(long size, long used, long saves, long fallbacks) {
    }

    /** Old data of a claim, read from the source, not yet on the target ({@code data}: position 0, limit the claim's bytes). */
    private record Saved(Claim claim, ByteBuffer data) {
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
    /** {@link #guestsDone} at the last write-back step: guests that came since make it skip. */
    private final java.util.concurrent.atomic.AtomicLong guestsAtLastStep = new java.util.concurrent.atomic.AtomicLong();

    /** Guest requests in the filter now, and completed so far ({@link #yieldToGuests}). */
    private final java.util.concurrent.atomic.AtomicInteger guestsInFlight = new java.util.concurrent.atomic.AtomicInteger();
    private final java.util.concurrent.atomic.AtomicLong guestsDone = new java.util.concurrent.atomic.AtomicLong();
    /** Background copies waiting in {@link #yieldToGuests}: only then does a guest's end signal. */
    private volatile int yielding;
    /** The longest one {@link #yieldToGuests} waits ({@link #MAX_YIELD_NANOS}; tests set it longer). */
    private long yieldBoundNanos = MAX_YIELD_NANOS;
    private final Condition guestsQuiet = lock.newCondition();

    /** The save buffer's pool; null when copy-before-writes copy synchronously. */
    private final CopyBuffers saveBuffers;
    /** Saved entries not being drained, oldest first. */
    private final ArrayDeque<Saved> saveQueue = new ArrayDeque<>();
    /** Every entry held (queued or being drained), by first cluster. */
    private final TreeMap<Integer, Saved> savedByCluster = new TreeMap<>();
    /** Clusters whose old data is held in the save buffer. */
    private final BitSet saved = new BitSet();
    private long savedBytes;
    /** saveQueue's size, kept under the lock and read without it by {@link #yieldToGuests}. */
    private volatile int queuedSaves;
    private long saves;
    private long fallbacks;
    /** Entries being written to the target now. */
    private int draining;
    /** The failed drain the job has not dealt with yet; no drain runs meanwhile. */
    private CopyError drainError;
    /** Set once by {@link #stopDrains}; read without the lock by copy-before-writes. */
    private volatile boolean drainsStopped;

    /**
     * @param clusterSize     copy granularity (backup: max(64 KiB, target cluster size))
     * @param chunk           maximum bytes per request (a multiple of clusterSize, ≤ 1 MiB)
     * @param maxBuffers      bound on requests in flight at once (memory cap)
     * @param targetReadsZero the target reads as zeroes wherever nothing is written
     */
    public BlockCopy(BlockNode source, BlockNode target, long length, int clusterSize, int chunk,
                     int maxBuffers, boolean targetReadsZero) {
        this(source, target, length, clusterSize, chunk, maxBuffers, targetReadsZero, 0);
    }

    /**
     * @param saveBytes bound of the save buffer, bytes (rounded down to whole clusters); 0: every
     *                  copy-before-write copies synchronously
     */
    public BlockCopy(BlockNode source, BlockNode target, long length, int clusterSize, int chunk,
                     int maxBuffers, boolean targetReadsZero, long saveBytes) {
        if (saveBytes < 0) {
            throw new IllegalArgumentException("save buffer of " + saveBytes + " bytes");
        }
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
        int saveUnits = (int) Math.min(Integer.MAX_VALUE, saveBytes / clusterSize);
        this.saveBuffers = saveUnits == 0 ? null
                : new CopyBuffers(clusterSize, Math.min(chunkUnits, saveUnits), saveUnits);
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
            // saved clusters have not reached the target either
            BitSet remaining = (BitSet) dirty.clone();
            remaining.or(saved);
            for (int c = remaining.nextSetBit(0); c >= 0 && c < clusters; ) {
                int end = remaining.nextClearBit(c);
                long start = (long) c * clusterSize;
                into.mark(start, Math.min(length, (long) end * clusterSize) - start);
                c = remaining.nextSetBit(end);
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

    /** True while clusters are dirty, in flight or saved and not yet on the target. */
    public boolean hasWork() {
        lock.lock();
        try {
            return !dirty.isEmpty() || !inFlight.isEmpty() || !saved.isEmpty();
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
                    writeData(pos, buf);
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
        copyAndRelease(c, failure -> { });
    }

    /**
     * {@link #copyAndRelease(Claim)}, telling {@code beforeRedirty} of a failure before the claim's
     * clusters are dirty again: a dispatcher that records the failure there and checks for it after
     * each claim never claims the failed clusters again in the same round (QEMU's block-copy
     * starts no task once one failed).
     */
    public void copyAndRelease(Claim c, java.util.function.Consumer<Throwable> beforeRedirty) throws CopyError {
        boolean copied = false;
        try {
            copy(c);
            copied = true;
        } catch (Throwable t) {
            beforeRedirty.accept(t);
            throw t;
        } finally {
            release(c, copied);
        }
    }

    /** A guest request enters the filter. */
    public void guestBegin() {
        guestsInFlight.incrementAndGet();
    }

    /** A guest request of {@link #guestBegin} is done (whatever its outcome). */
    public void guestEnd() {
        guestsInFlight.decrementAndGet();
        guestsDone.incrementAndGet();
        // counts first, then the waiter count: a waiter that checked before these updates has
        // already raised yielding and is (or is about to be) waiting under the lock we take
        if (yielding > 0) {
            lock.lock();
            try {
                guestsQuiet.signalAll();
            } finally {
                lock.unlock();
            }
        }
    }

    /**
     * Before the job claims its next chunk: guests first (the class comment's rule). Called with
     * no claim held: a guest write may be waiting for a claimed cluster, and must not wait on us.
     */
    public void yieldToGuests() {
        if (guestsInFlight.get() == 0 && queuedSaves == 0) {
            return;
        }
        lock.lock();
        try {
            yielding++;
            long until = guestsDone.get() + GUEST_TURN;
            long left = yieldBoundNanos;
            while (left > 0 && ((guestsInFlight.get() > 0 && guestsDone.get() < until) || drainPending())) {
                try {
                    left = guestsQuiet.awaitNanos(left);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return;
                }
            }
        } finally {
            yielding--;
            lock.unlock();
        }
    }

    /** Saved entries wait and a drain can take them (lock held). */
    private boolean drainPending() {
        return !saveQueue.isEmpty() && drainError == null && !drainsStopped;
    }

    /** The save queue changed, or the drains can no longer take it: yielding copies look again (lock held). */
    private void saveQueueChanged() {
        queuedSaves = saveQueue.size();
        if (yielding > 0) {
            guestsQuiet.signalAll();
        }
    }

    /** For tests: how long one {@link #yieldToGuests} waits at most. */
    void yieldBound(long nanos) {
        lock.lock();
        try {
            yieldBoundNanos = nanos;
        } finally {
            lock.unlock();
        }
    }

    /**
     * Every {@link #WRITEBACK_STEP} bytes written, one writer asks the target to start writing
     * back, unless a guest request came through the filter during the step or is in it now.
     */
    private void hintWriteback(long written) throws IOException {
        long total = writtenSinceHint.addAndGet(written);
        if (total >= WRITEBACK_STEP && writtenSinceHint.compareAndSet(total, 0)) {
            long guests = guestsDone.get();
            boolean guestsWrote = guestsAtLastStep.getAndSet(guests) != guests || guestsInFlight.get() > 0;
            if (!guestsWrote) {
                target.startWriteback();
            }
        }
    }

    /**
     * Old data onto the target at {@code pos} (the buffer's remaining bytes): zeroes as
     * write-zeroes (or nothing over a target that reads zeroes), anything else as data.
     */
    private void writeData(long pos, ByteBuffer buf) throws CopyError {
        int n = buf.remaining();
        if (isZero(buf)) {
            writeZeroes(pos, n);
            return;
        }
        try {
            target.write(pos, buf, false);
            hintWriteback(n);
        } catch (IOException e) {
            throw new CopyError(IoOperation.WRITE, pos, IoError.wrap(e));
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
     * The copy-before-write of {@code claims}, in order: each is saved when the save buffer has
     * room for it, copied to the target otherwise. At the first failure (of any kind) the claims
     * not yet dealt with are released dirty again and the failure is thrown. Every claim is
     * ended (released, or saved) either way.
     */
    private void saveOrCopyAll(List<Claim> claims) throws CopyError {
        int next = 0;
        try {
            while (next < claims.size()) {
                Claim c = claims.get(next++);
                // once the drains stopped (the run is over), nothing would write a saved entry
                boolean saving = saveBuffers != null && !drainsStopped;
                ByteBuffer buf = saving ? saveBuffers.tryTake(c.count()) : null;
                if (buf != null) {
                    save(c, buf);
                } else {
                    if (saving) {
                        countFallback();
                    }
                    copyAndRelease(c);
                }
            }
        } finally {
            while (next < claims.size()) {
                release(claims.get(next++), false);
            }
        }
    }

    private void countFallback() {
        lock.lock();
        try {
            fallbacks++;
        } finally {
            lock.unlock();
        }
    }

    /**
     * Reads a claim's old data into {@code buf} and holds it for the drainer: the claim's clusters
     * leave the in-flight set for the saved set, so the guest write may go on. Old data that is
     * all zeroes over a target that reads zeroes needs no drain: the claim is simply copied. On a
     * read failure the claim is released dirty again and {@code buf} given back.
     */
    private void save(Claim c, ByteBuffer buf) throws CopyError {
        long start = c.first() * clusterSize;
        int len = (int) bytes(c);
        boolean held = false;
        boolean ended = false;
        try {
            // A plain read, no block status first: a hole or an unallocated cluster reads as
            // zeroes without I/O anyway, and the status (two lseeks on a raw file, under the
            // inode lock the guest's own writes take) cost more than the read on this path.
            buf.clear().limit(len);
            try {
                source.read(start, buf);
            } catch (IOException e) {
                throw new CopyError(IoOperation.READ, start, IoError.wrap(e));
            }
            if (targetReadsZero && isZero(buf.position(0).limit(len))) {
                release(c, true);
                ended = true;
                progress.accept(len);
                return;
            }
            lock.lock();
            try {
                int first = (int) c.first();
                inFlight.clear(first, first + c.count());
                saved.set(first, first + c.count());
                Saved entry = new Saved(c, buf.position(0).limit(len));
                saveQueue.addLast(entry);
                saveQueueChanged();
                savedByCluster.put(first, entry);
                savedBytes += len;
                saves++;
                changed.signalAll();
            } finally {
                lock.unlock();
            }
            held = true;
            ended = true;
        } finally {
            if (!held) {
                saveBuffers.give(buf);
            }
            if (!ended) {
                release(c, false);
            }
        }
    }

    /** True when copy-before-writes save old data for a drainer (a save bound was given). */
    public boolean savesBeforeWrite() {
        return saveBuffers != null;
    }

    /** The save buffer's use; null without one. */
    public SaveUse saveUse() {
        if (saveBuffers == null) {
            return null;
        }
        lock.lock();
        try {
            return new SaveUse(saveBuffers.boundBytes(), savedBytes, saves, fallbacks);
        } finally {
            lock.unlock();
        }
    }

    /**
     * Blocks until an entry may be drained (one is queued and no drain error is pending) or drains
     * are stopped. Returns false once stopped.
     */
    public boolean awaitSaved() {
        lock.lock();
        try {
            while (!drainsStopped && (saveQueue.isEmpty() || drainError != null)) {
                changed.awaitUninterruptibly();
            }
            return !drainsStopped;
        } finally {
            lock.unlock();
        }
    }

    /**
     * Writes the oldest saved entry to the target. Returns false when there was none to take (or
     * a drain error is pending, or drains are stopped). On success the clusters are copied and
     * their memory is free again; on failure the entry stays held, first in line, and the error
     * is also kept for {@link #drainError}.
     *
     * @throws CopyError the target write failed (operation write)
     */
    public boolean drainOne() throws CopyError {
        Saved s;
        lock.lock();
        try {
            if (drainsStopped || drainError != null || (s = saveQueue.pollFirst()) == null) {
                return false;
            }
            draining++;
            saveQueueChanged();
        } finally {
            lock.unlock();
        }
        long start = s.claim().first() * clusterSize;
        int len = s.data().limit();
        boolean written = false;
        CopyError failure = null;
        try {
            writeData(start, s.data().duplicate().position(0).limit(len));
            written = true;
        } catch (CopyError e) {
            failure = e;
            throw e;
        } catch (RuntimeException | Error e) {
            // a driver bug: the entry must not be lost, and the job must hear of it
            failure = new CopyError(IoOperation.WRITE, start,
                    new IoError(jblockd.block.Errno.EIO, String.valueOf(e.getMessage()), e));
            throw e;
        } finally {
            lock.lock();
            try {
                draining--;
                int first = (int) s.claim().first();
                if (written) {
                    saved.clear(first, first + s.claim().count());
                    savedByCluster.remove(first);
                    savedBytes -= len;
                } else {
                    saveQueue.addFirst(s);
                    if (drainError == null) {
                        drainError = failure;
                    }
                }
                saveQueueChanged();
                changed.signalAll();
            } finally {
                lock.unlock();
            }
        }
        saveBuffers.give(s.data());
        progress.accept(len);
        return true;
    }

    /** The failed drain that stops the drainer until {@link #retryDrains}; null when none. */
    public CopyError drainError() {
        lock.lock();
        try {
            return drainError;
        } finally {
            lock.unlock();
        }
    }

    /** The job applied its policy to the drain error and goes on: drains are tried again. */
    public void retryDrains() {
        lock.lock();
        try {
            drainError = null;
            changed.signalAll();
        } finally {
            lock.unlock();
        }
    }

    /**
     * The job's run is over: no drain starts any more, and this waits for those under way.
     * Entries still held stay counted as not copied ({@link #markRemaining}) until
     * {@link #dropSaved}.
     */
    public void stopDrains() {
        lock.lock();
        try {
            drainsStopped = true;
            saveQueueChanged();
            changed.signalAll();
            while (draining > 0) {
                changed.awaitUninterruptibly();
            }
        } finally {
            lock.unlock();
        }
    }

    /**
     * Frees the memory of saved entries that never reached the target (the backup failed or was
     * cancelled; its target is incomplete anyway). Their clusters stay saved, so they count as
     * not copied and nobody copies them now. Call after {@link #stopDrains}.
     */
    public void dropSaved() {
        lock.lock();
        try {
            for (Saved s : savedByCluster.values()) {
                saveBuffers.give(s.data());
            }
            savedByCluster.clear();
            saveQueue.clear();
            saveQueueChanged();
            savedBytes = 0;
        } finally {
            lock.unlock();
        }
    }

    /**
     * Of {@code [offset, offset + len)}: {@code n > 0} when its first {@code n} bytes are saved
     * and not on the target yet, {@code -m} when its first {@code m} bytes are not saved.
     */
    public long savedRun(long offset, long len) {
        int c = (int) (offset / clusterSize);
        lock.lock();
        try {
            boolean isSaved = saved.get(c);
            int next = isSaved ? saved.nextClearBit(c) : saved.nextSetBit(c);
            long runEnd = next < 0 ? Long.MAX_VALUE : (long) next * clusterSize;
            long n = Math.min(len, runEnd - offset);
            return isSaved ? n : -n;
        } finally {
            lock.unlock();
        }
    }

    /**
     * The snapshot view of a range whose copy-before-write is done: returns {@code n > 0} when the
     * first {@code n} bytes at {@code offset} are saved and not on the target yet (they are copied
     * into {@code dst}, which advances), or {@code -m} when the first {@code m} bytes (at most
     * {@code dst.remaining()}) are not saved and are to be read from the target. A done cluster
     * that is not saved never becomes saved (only dirty clusters are saved), so the answer stays
     * true after the lock is left.
     */
    public long readSaved(long offset, ByteBuffer dst) {
        int want = dst.remaining();
        int c = (int) (offset / clusterSize);
        lock.lock();
        try {
            long run = savedRun(offset, want);
            if (run < 0) {
                return run;
            }
            Map.Entry<Integer, Saved> e = savedByCluster.floorEntry(c);
            if (e == null || e.getKey() + e.getValue().claim().count() <= c) {
                // dropped (the backup is over): the point-in-time data is gone
                throw new IllegalStateException("saved cluster " + c + " read after its backup ended");
            }
            Saved s = e.getValue();
            long entryStart = s.claim().first() * clusterSize;
            int from = (int) (offset - entryStart);
            int n = Math.min(want, s.data().limit() - from);
            dst.put(dst.position(), s.data(), from, n);
            dst.position(dst.position() + n);
            return n;
        } finally {
            lock.unlock();
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
            saveOrCopyAll(mine);
        }
    }
}
