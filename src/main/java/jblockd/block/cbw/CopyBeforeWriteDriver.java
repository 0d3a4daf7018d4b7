package jblockd.block.cbw;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.BitSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.locks.ReentrantLock;

import jblockd.block.Access;
import jblockd.block.BlockChild;
import jblockd.block.BlockNode;
import jblockd.block.BlockStatus;
import jblockd.block.Capabilities;
import jblockd.block.Errno;
import jblockd.block.Extent;
import jblockd.block.FilterDriver;
import jblockd.block.IoError;
import jblockd.block.Perm;
import jblockd.block.TrackedReads;

/**
 * The copy-before-write filter (QEMU block/copy-before-write.c): above a source node, it
 * forwards everything to the source, but before a write, write-zeroes or discard reaches the
 * source it copies the old data of the affected clusters to the target through
 * {@link BlockCopy#copyBeforeWrite}. One driver serves both uses QEMU has for it: the filter a
 * backup job inserts ({@link #CopyBeforeWriteDriver(BlockNode, BlockCopy)}, the job copies the
 * rest in the background) and the node users add with {@code blockdev-add
 * driver=copy-before-write} for 7.x fleecing, read through a {@code snapshot-access} node.
 *
 * <h2>The snapshot view (cbw_co_preadv_snapshot and friends)</h2>
 * A point-in-time reader asks through {@link #snapshotRead}, {@link #snapshotStatus} and
 * {@link #snapshotDiscard}. Clusters a copy-before-write copied ({@code done}) are read from the
 * target; the others from the source, as a <em>frozen read</em>: a guest write to them, once its
 * copy is done, waits for such reads before it changes the source ({@link TrackedReads}). Only
 * clusters in {@code access} are readable (the {@code bitmap} option's clusters, all without it,
 * minus what a snapshot discard gave up); others fail with EACCES, as does everything once
 * {@code on-cbw-error=break-snapshot} saw a copy fail.
 * <p>
 * If a copy fails: with {@code break-guest-write} (QEMU's default) the guest request fails with
 * the copy's error (the device's werror applies, not a job's on-*-error — reference/backup.md
 * §4.5); with {@code break-snapshot} the guest write goes on and the snapshot is gone.
 * {@code cbw-timeout} bounds how long a guest write waits for its copy (ETIMEDOUT; the copy
 * itself finishes in the background).
 */
public final class CopyBeforeWriteDriver implements FilterDriver {
    /** BlockdevOptionsCbw's {@code on-cbw-error} (OnCbwError). */
    public enum OnCbwError {
        BREAK_GUEST_WRITE("break-guest-write"), BREAK_SNAPSHOT("break-snapshot");

        private final String wire;

        OnCbwError(String wire) {
            this.wire = wire;
        }

        public String wire() {
            return wire;
        }

        public static OnCbwError of(String wire) {
            for (OnCbwError e : values()) {
                if (e.wire.equals(wire)) {
                    return e;
                }
            }
            throw new IllegalArgumentException(wire);
        }
    }

    private final BlockNode source;
    private final BlockCopy copy;
    private final OnCbwError onCbwError;
    private final long timeoutNanos;
    /** Runs copies a guest write waits for with a timeout (null without cbw-timeout). */
    private final ExecutorService timedCopies;
    /** Snapshot readers of the source, and (classic fleecing) of a target over the source. */
    private final TrackedReads frozenReads = new TrackedReads();

    private final ReentrantLock lock = new ReentrantLock();
    /** Clusters a snapshot reader may read (QEMU's access_bitmap). */
    private final BitSet access = new BitSet();
    /** Clusters whose old data a copy-before-write put in the target (QEMU's done_bitmap). */
    private final BitSet done = new BitSet();
    /** The first copy failure with break-snapshot; from then on the snapshot is unreadable. */
    private IoError snapshotError;

    /** A backup job's filter: break-guest-write, no timeout. */
    public CopyBeforeWriteDriver(BlockNode source, BlockCopy copy) {
        this(source, copy, OnCbwError.BREAK_GUEST_WRITE, 0);
    }

    /**
     * @param copy          its dirty clusters are what gets copied and what a snapshot reader
     *                      may read (restricted to the {@code bitmap} option already)
     * @param timeoutSeconds cbw-timeout; 0: wait for the copy however long it takes
     */
    public CopyBeforeWriteDriver(BlockNode source, BlockCopy copy, OnCbwError onCbwError, long timeoutSeconds) {
        this.source = source;
        this.copy = copy;
        this.onCbwError = onCbwError;
        this.timeoutNanos = TimeUnit.SECONDS.toNanos(timeoutSeconds);
        this.timedCopies = timeoutSeconds > 0 ? Executors.newVirtualThreadPerTaskExecutor() : null;
        copy.copyDirtyInto(access);
    }

    public BlockCopy blockCopy() {
        return copy;
    }

    public BlockNode source() {
        return source;
    }

    public BlockNode target() {
        return copy.target();
    }

    public OnCbwError onCbwError() {
        return onCbwError;
    }

    /**
     * The reads a guest write waits for once its copy is done. A backup whose target reads
     * through to the source (classic fleecing) registers the target's reads here
     * ({@link BlockNode#trackReads}).
     */
    public TrackedReads frozenReads() {
        return frozenReads;
    }

    /** Bytes the snapshot may read and bytes copy-before-writes copied (QEMU's access and done bitmap counts). */
    public long[] snapshotCounts() {
        lock.lock();
        try {
            return new long[] {bytes(access), bytes(done)};
        } finally {
            lock.unlock();
        }
    }

    private long bytes(BitSet clusters) {
        long n = (long) clusters.cardinality() * copy.clusterSize();
        long count = copy.clusterCount();
        if (count > 0 && clusters.get((int) count - 1)) {
            n -= count * copy.clusterSize() - copy.length();
        }
        return n;
    }

    @Override
    public String driverName() {
        return "copy-before-write";
    }

    // Every guest request is counted for the job's "guests first" rule (BlockCopy#yieldToGuests).

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        copy.guestBegin();
        try {
            source.read(offset, dst);
        } finally {
            copy.guestEnd();
        }
    }

    @Override
    public void write(long offset, ByteBuffer src, boolean fua) throws IOException {
        copy.guestBegin();
        try {
            beforeWrite(offset, src.remaining());
            source.write(offset, src, fua);
        } finally {
            copy.guestEnd();
        }
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        copy.guestBegin();
        try {
            beforeWrite(offset, length);
            source.writeZeroes(offset, length, mayUnmap);
        } finally {
            copy.guestEnd();
        }
    }

    @Override
    public void discard(long offset, long length) throws IOException {
        copy.guestBegin();
        try {
            beforeWrite(offset, length);
            source.discard(offset, length);
        } finally {
            copy.guestEnd();
        }
    }

    /**
     * cbw_do_copy_before_write(): the old data of every cluster the request touches goes to the
     * target first; then the request waits for snapshot reads of the source in flight over it.
     * When this returns normally the source may change there.
     */
    private void beforeWrite(long offset, long length) throws IOException {
        if (length <= 0) {
            return;
        }
        lock.lock();
        try {
            if (snapshotError != null) {
                return; // the snapshot is gone: nothing to keep any more
            }
        } finally {
            lock.unlock();
        }
        int cs = copy.clusterSize();
        long off = offset / cs * cs;
        long end = Math.min(copy.length(), (offset + length + cs - 1) / cs * cs);
        IoError failure = null;
        try {
            runCopy(off, end - off);
        } catch (IoError e) {
            if (onCbwError == OnCbwError.BREAK_GUEST_WRITE) {
                throw e;
            }
            failure = e;
        }
        lock.lock();
        try {
            if (failure != null) {
                if (snapshotError == null) {
                    snapshotError = failure;
                }
            } else {
                done.set((int) (off / cs), (int) ((end + cs - 1) / cs));
            }
        } finally {
            lock.unlock();
        }
        // Set under the lock before this mark: a reader that saw the cluster as not done
        // registered before it, and is waited for; a later one reads the target.
        frozenReads.awaitOverlapping(off, end - off);
    }

    private void runCopy(long off, long len) throws IoError {
        if (timedCopies == null) {
            copy.copyBeforeWrite(off, len);
            return;
        }
        Future<?> f = timedCopies.submit(() -> {
            copy.copyBeforeWrite(off, len);
            return null;
        });
        try {
            f.get(timeoutNanos, TimeUnit.NANOSECONDS);
        } catch (TimeoutException e) {
            // block_copy() with a timeout: the guest stops waiting, the copy goes on
            throw new IoError(Errno.ETIMEDOUT, Errno.ETIMEDOUT.strerror());
        } catch (ExecutionException e) {
            throw IoError.wrap(e.getCause() instanceof IOException io ? io : new IOException(e.getCause()));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IoError(Errno.EINTR, "interrupted waiting for copy-before-write");
        }
    }

    // ------------------------------------------------------------------ the snapshot view

    /** One run of the snapshot: read from {@code fromTarget} or from the source, frozen. */
    private record Run(long length, boolean fromTarget, long ticket) {
    }

    /**
     * cbw_snapshot_read_lock(): EACCES unless the whole rest of the request is accessible; the
     * run of equal done-ness at {@code offset}; a read of the source is registered as frozen.
     */
    private Run lockRun(long offset, long bytes) throws IoError {
        int cs = copy.clusterSize();
        int first = (int) (offset / cs);
        int last = (int) ((offset + bytes + cs - 1) / cs);
        lock.lock();
        try {
            if (snapshotError != null || access.nextClearBit(first) < last) {
                throw new IoError(Errno.EACCES, Errno.EACCES.strerror());
            }
            boolean isDone = done.get(first);
            int runEnd = isDone ? done.nextClearBit(first) : Math.min(last, nextSet(done, first));
            long len = Math.min(bytes, (long) runEnd * cs - offset);
            long ticket = isDone ? -1 : frozenReads.begin(offset, len);
            return new Run(len, isDone, ticket);
        } finally {
            lock.unlock();
        }
    }

    private static int nextSet(BitSet b, int from) {
        int n = b.nextSetBit(from);
        return n < 0 ? Integer.MAX_VALUE : n;
    }

    private void unlockRun(Run r) {
        if (!r.fromTarget()) {
            frozenReads.end(r.ticket());
        }
    }

    /** cbw_co_preadv_snapshot(): the disk as it was when the filter was added. */
    public void snapshotRead(long offset, ByteBuffer dst) throws IOException {
        long pos = offset;
        while (dst.hasRemaining()) {
            Run r = lockRun(pos, dst.remaining());
            ByteBuffer part = dst.slice(dst.position(), (int) r.length());
            long n = r.length();
            try {
                if (!r.fromTarget()) {
                    source.read(pos, part);
                } else {
                    // done, but maybe still in the backup's save buffer rather than on the target
                    long saved = copy.readSaved(pos, part);
                    if (saved > 0) {
                        n = saved;
                    } else {
                        n = -saved;
                        copy.target().read(pos, part.limit((int) n));
                    }
                }
            } finally {
                unlockRun(r);
            }
            dst.position(dst.position() + (int) n);
            pos += n;
        }
    }

    /**
     * cbw_co_snapshot_block_status(): the status of the layer the run is read from; the target
     * is asked only where a copy put data, so its answer is always allocated.
     */
    public Extent snapshotStatus(long offset, long length) throws IOException {
        Run r = lockRun(offset, length);
        try {
            if (r.fromTarget()) {
                long saved = copy.savedRun(offset, r.length());
                if (saved > 0) {
                    // old data the backup's save buffer holds and the target does not yet
                    return new Extent(offset, saved, jblockd.block.Allocation.DATA);
                }
                Extent e = BlockStatus.above(copy.target(), null, offset, -saved);
                return new Extent(offset, e.length(), e.allocation());
            }
            return source.status(offset, r.length());
        } finally {
            unlockRun(r);
        }
    }

    /**
     * cbw_co_pdiscard_snapshot(): the reader gives up whole clusters of the range: they are no
     * longer readable, no longer copied before a write, and the target may free their copy.
     */
    public void snapshotDiscard(long offset, long length) throws IOException {
        int cs = copy.clusterSize();
        long start = (offset + cs - 1) / cs * cs;
        long end = (offset + length) / cs * cs;
        if (offset + length >= copy.length()) {
            end = copy.length(); // the short last cluster is whole at the end of the disk
        }
        if (end <= start) {
            return;
        }
        lock.lock();
        try {
            access.clear((int) (start / cs), (int) ((end + cs - 1) / cs));
        } finally {
            lock.unlock();
        }
        copy.reset(start, end - start);
        copy.target().discard(start, end - start);
    }

    @Override
    public void flush() throws IOException {
        copy.guestBegin();
        try {
            source.flush();
        } finally {
            copy.guestEnd();
        }
    }

    @Override
    public long length() throws IOException {
        return source.length();
    }

    @Override
    public Extent status(long offset, long length) throws IOException {
        return source.status(offset, length);
    }

    @Override
    public Capabilities capabilities() {
        Capabilities c = source.capabilities();
        // Never growable: the filter's length is the source's, and requests past it are errors.
        return new Capabilities(source.readOnly(), c.canDiscard(), c.canWriteZeroes(), c.canFua(),
                c.requestAlignment(), false);
    }

    /** cbw_close(): copies a timed-out guest write left running finish first. */
    @Override
    public void close() {
        if (timedCopies != null) {
            timedCopies.close();
        }
        // Children belong to the graph (and a backup's job).
    }

    @Override
    public String filename() {
        return source.driver().filename();
    }

    @Override
    public List<BlockChild> children() {
        return List.of(new BlockChild("file", source), new BlockChild("target", copy.target()));
    }

    /**
     * cbw_child_perm(): the target is written while the guest may write its backing chain, but
     * never resized; the source must read consistently, and nobody may write or resize it
     * except through this filter (that would bypass the copy).
     */
    @Override
    public Access childAccess(BlockChild child, boolean writable, Access parentUse) {
        if (child.node() != source) {
            Set<Perm> shares = Perm.all();
            shares.remove(Perm.RESIZE);
            return new Access(Perm.of(Perm.WRITE), shares);
        }
        Set<Perm> needs = Perm.none();
        needs.addAll(parentUse.needs());
        needs.add(Perm.CONSISTENT_READ);
        Set<Perm> shares = Perm.none();
        shares.addAll(parentUse.shares());
        shares.remove(Perm.WRITE);
        shares.remove(Perm.RESIZE);
        return new Access(needs, shares);
    }

    /** copy-before-write is a filter of its file child (block/copy-before-write.c). */
    @Override
    public BlockNode filtered() {
        return source;
    }
}
