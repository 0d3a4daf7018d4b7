package jblockd.job.mirror;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

import jblockd.block.Allocation;
import jblockd.block.BlockNode;
import jblockd.block.BlockStatus;
import jblockd.block.Extent;
import jblockd.block.IoError;
import jblockd.block.bitmap.DirtyBitmap;
import jblockd.device.DrainedSection;
import jblockd.job.JobCancelledException;
import jblockd.job.JobContext;
import jblockd.job.JobDriver;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.ErrorAction;
import jblockd.qapi.IoOperation;
import jblockd.qapi.JobType;
import jblockd.qapi.MirrorSyncMode;
import jblockd.qapi.QmpError;

/**
 * drive-mirror / blockdev-mirror and active block-commit (QEMU block/mirror.c): copies the
 * dirty parts of {@code source} to {@code target} until both are in sync, reports READY, keeps
 * them in sync, and on {@code block-job-complete} pivots the device onto the target.
 *
 * <h2>Copy engine</h2>
 * A {@link DirtyBitmap} at the job's granularity, fed by the {@link JobTopFilter} above the
 * source, says what still has to be copied. The job thread walks dirty runs round-robin and
 * dispatches copy operations of at most 1 MiB (at least one granule) on virtual threads: at most
 * {@value #MAX_IN_FLIGHT} at once and never more than {@code buf-size} bytes of buffers. Each
 * operation's range is cleared in the bitmap before the source is read, and a guest write marks
 * its granules after it completed, so a write racing with a copy leaves them dirty and they are
 * copied again. Two operations never overlap (a dirty run that overlaps one in flight waits),
 * so an older copy can never land on the target after a newer one. Ranges that read as zeroes
 * through the source's chain are written as zeroes on the target (unmapped when {@code unmap}).
 *
 * <h2>End</h2>
 * Complete, or a soft cancel after READY: the devices on the filter are drained (guest writes
 * wait, those in flight finish: {@link GraphActions#drain}), the rest of the bitmap is copied,
 * the target flushed. For complete, guest writes are then written through to the target as well
 * and the guests go on at once; the pivot itself ({@link #prepare}, so that its failure fails
 * the job) swaps the device's root in a brief drained section of its own. For a soft
 * cancel the filter is removed and the device stays on the source (QEMU 7.2 mirror_cancel()).
 *
 * <h2>Errors</h2>
 * Source reads go through {@code on-source-error}, target writes through {@code on-target-error}
 * ({@link JobContext#handleError}): {@code ignore} marks the range dirty again, so it is retried
 * later (the framework backs off when it keeps failing); {@code stop} retries after resume;
 * {@code report} fails the job once every operation in flight has finished.
 */
public final class MirrorJob implements JobDriver {
    /** QEMU mirror.c MAX_IO_BYTES. */
    public static final int MAX_OP_BYTES = 1 << 20;
    /** QEMU mirror.c MAX_IN_FLIGHT. */
    public static final int MAX_IN_FLIGHT = 16;
    public static final long DEFAULT_BUF_SIZE = 16L << 20;
    /** How often an idle READY job looks at the bitmap again (a guest write's copy latency). */
    private static final long IDLE_POLL_NANOS = TimeUnit.MILLISECONDS.toNanos(10);

    /**
     * @param base        initial pass: only ranges allocated above this node are dirty
     *                    (sync=top: the source's backing; active commit: the base); null for
     *                    sync=full (everything)
     * @param writeBlocking copy-mode=write-blocking: guest writes reach the target before they
     *                    complete ({@link #activeWrite})
     */
    public record Params(JobType type, MirrorSyncMode sync, BlockNode base, long bufSize,
                         BlockdevOnError onSourceError, BlockdevOnError onTargetError, boolean unmap,
                         boolean writeBlocking) {
    }

    /** What the end of the job does to the graph; provided by the command that started it. */
    public interface GraphActions {
        /**
         * Opens a drained section over the devices on the job's filter: no guest request is in
         * flight and new ones wait until it is closed (the final sync, mirror_run()'s drain).
         */
        DrainedSection drain();

        /** Pivot: make the target the device's root (in a drained section of its own). */
        void pivot() throws Exception;

        /** Put the source back as the device's root (soft cancel, failure). Idempotent. */
        void detach();

        /** Release what the job opened (after pivot or not); must not throw. */
        void release(boolean pivoted);
    }

    private final Params params;
    private final BlockNode source;
    private final BlockNode target;
    private final JobTopFilter filter;
    private final DirtyBitmap bitmap;
    private final GraphActions actions;

    private volatile boolean completeRequested;
    private volatile boolean pivotPending;
    private volatile boolean pivoted;
    /** The final sync's drained section while it is open (job thread only). */
    private DrainedSection finalSync;

    private final ReentrantLock lock = new ReentrantLock();
    private final Condition opDone = lock.newCondition();
    // guarded by lock
    private int opsInFlight;
    private long bytesInFlight;
    private final List<long[]> inFlight = new ArrayList<>();
    private Throwable opFailure;
    /** Where the operations run (jblockd.job.CopyWorkers); set while {@link #run} runs. */
    private java.util.concurrent.ExecutorService opThreads;
    /** The job while {@link #run} copies and guest writes are to be copied actively; else null. */
    private volatile JobContext activeCtx;
    /** The first active write's target error whose action was report (guarded by lock). */
    private IoError activeReport;
    /** Active writes between their start and their end (guarded by lock). */
    private int activeWrites;

    private final ArrayBlockingQueue<ByteBuffer> buffers = new ArrayBlockingQueue<>(MAX_IN_FLIGHT);

    public MirrorJob(Params params, BlockNode source, BlockNode target, JobTopFilter filter,
                     DirtyBitmap bitmap, GraphActions actions) {
        this.params = params;
        this.source = source;
        this.target = target;
        this.filter = filter;
        this.bitmap = bitmap;
        this.actions = actions;
    }

    @Override
    public JobType type() {
        return params.type();
    }

    public DirtyBitmap bitmap() {
        return bitmap;
    }

    @Override
    public boolean canComplete() {
        return true;
    }

    @Override
    public void complete() throws QmpError {
        // A target file deleted under the running job still takes writes through its open
        // descriptor, so the mirror reaches READY; pivoting onto it would put every later guest
        // write into a file that vanishes when it closes. QEMU pivots anyway; we refuse and
        // leave the device on its source (block-job-cancel still ends the job cleanly).
        String gone = unlinkedFile(target);
        if (gone != null) {
            throw QmpError.generic("Cannot complete the mirror: the target file '" + gone
                    + "' has been deleted; guest writes after the pivot would be lost");
        }
        completeRequested = true;
    }

    /** The filename of an unlinked file under {@code node} (not following backing links), or null. */
    private static String unlinkedFile(BlockNode node) {
        if (node.driver().unlinked()) {
            return node.driver().filename();
        }
        for (jblockd.block.BlockChild c : node.driver().children()) {
            if (!c.role().equals("backing")) {
                String f = unlinkedFile(c.node());
                if (f != null) {
                    return f;
                }
            }
        }
        return null;
    }

    /** mirror_cancel(): only a READY job can be cancelled softly (it then ends COMPLETED). */
    @Override
    public boolean cancel(boolean force, boolean ready) {
        return force || !ready;
    }

    // ------------------------------------------------------------------ run

    @Override
    public void run(JobContext ctx) throws Exception {
        boolean finishedInSync = false;
        opThreads = jblockd.job.CopyWorkers.start("mirror-op-" + ctx.id(), MAX_IN_FLIGHT);
        if (params.writeBlocking()) {
            activeCtx = ctx;
            filter.setActiveCopy(this::activeWrite);
        }
        try {
            initialDirty(ctx);
            loop(ctx);
            finishedInSync = true;
        } finally {
            // Before the final sync's write-through or the filter's removal: the loop ended in a
            // drained section (or failed, cancelled), so no active write is in flight now.
            stopActiveCopy();
            awaitAllOps();
            opThreads.shutdown();
            if (!finishedInSync) {
                endFinalSync();
            }
        }
        // In sync, the devices drained, target flushed.
        if (completeRequested && !ctx.cancelRequested()) {
            filter.setWriteThrough(target);
            pivotPending = true;
        } else {
            actions.detach();
        }
        endFinalSync();
    }

    private void endFinalSync() {
        if (finalSync != null) {
            finalSync.close();
            finalSync = null;
        }
    }

    /** mirror_dirty_init(): what the initial pass has to copy. */
    private void initialDirty(JobContext ctx) throws IOException, JobCancelledException {
        long size = source.length();
        switch (params.sync()) {
            case FULL -> bitmap.markAll();
            case NONE -> {
                // only new guest writes
            }
            default -> {
                long off = 0;
                int steps = 0;
                while (off < size) {
                    Extent e = BlockStatus.above(source, params.base(), off, size - off);
                    if (e.allocation() != Allocation.UNALLOCATED) {
                        bitmap.mark(e.offset(), e.length());
                    }
                    off = e.end();
                    if (++steps % 256 == 0) {
                        ctx.pausePoint();
                    }
                }
            }
        }
        ctx.setLen(bitmap.dirtyBytes());
    }

    private void loop(JobContext ctx) throws Exception {
        long cursor = 0;
        long maxOp = Math.max(MAX_OP_BYTES, bitmap.granularity());
        while (true) {
            rethrowFailure();
            rethrowActiveReport();
            ctx.pausePoint();
            long dirty;
            long inflightBytes;
            long done;
            // One snapshot: a copy's end moves its bytes from in flight to done (or back to
            // dirty) under the same lock (finishOp), so len is never counted twice for it (a CI
            // run saw len 65 MiB of a 64 MiB mirror whose copies failed, QEMU's stays 64).
            lock.lock();
            try {
                dirty = bitmap.dirtyBytes();
                inflightBytes = bytesInFlight;
                done = ctx.offset();
            } finally {
                lock.unlock();
            }
            ctx.setLen(done + dirty + inflightBytes);
            if (dirty > 0) {
                long[] run = bitmap.nextDirtyRun(cursor, maxOp);
                if (run == null) {
                    run = bitmap.nextDirtyRun(0, maxOp);
                    if (run == null) {
                        continue;
                    }
                }
                long[] clipped = clipToInFlight(run);
                if (clipped == null) {
                    // every dirty range ahead overlaps an operation in flight: wait for one
                    cursor = run[0] + run[1];
                    if (!anyDirtyFree(maxOp)) {
                        awaitOpDone(IDLE_POLL_NANOS);
                    }
                    continue;
                }
                if (!awaitCapacity(clipped[1])) {
                    continue;
                }
                ctx.rateLimit(clipped[1]);
                // opened before the range leaves the bitmap, closed once it is copied or dirty again
                JobContext.InFlight request = ctx.beginInFlight();
                bitmap.clear(clipped[0], clipped[1]);
                dispatch(ctx, clipped[0], clipped[1], request);
                cursor = clipped[0] + clipped[1];
                continue;
            }
            if (inflightBytes > 0 || opsInFlight() > 0) {
                awaitOpDone(IDLE_POLL_NANOS);
                continue;
            }
            // In sync: nothing dirty, nothing in flight.
            if (!ctx.isReady()) {
                ctx.setLen(ctx.offset());
                ctx.ready();
            }
            if (completeRequested || ctx.cancelRequested()) {
                if (finalSync == null) {
                    // mirror_run(): drain, then look at the bitmap once more.
                    finalSync = actions.drain();
                    continue;
                }
                flushTarget(ctx);
                return;
            }
            ctx.sleep(IDLE_POLL_NANOS);
        }
    }

    private void flushTarget(JobContext ctx) throws Exception {
        while (true) {
            try {
                target.flush();
                return;
            } catch (IOException e) {
                ErrorAction a = ctx.handleError(params.onTargetError(), IoOperation.WRITE, IoError.wrap(e), -1);
                if (a == ErrorAction.IGNORE) {
                    return;
                }
            }
        }
    }

    // ------------------------------------------------------------------ operations

    private long[] clipToInFlight(long[] run) {
        lock.lock();
        try {
            long start = run[0];
            long end = run[0] + run[1];
            for (long[] r : inFlight) {
                long rs = r[0];
                long re = r[0] + r[1];
                if (rs < end && start < re) {
                    if (rs <= start) {
                        start = Math.max(start, re);
                    } else {
                        end = Math.min(end, rs);
                    }
                }
            }
            if (start >= end) {
                return null;
            }
            return new long[] {start, end - start};
        } finally {
            lock.unlock();
        }
    }

    /** True when some dirty run does not overlap an operation in flight. */
    private boolean anyDirtyFree(long maxOp) {
        long from = 0;
        long size = bitmap.length();
        int guard = 0;
        while (from < size && guard++ < 64) {
            long[] run = bitmap.nextDirtyRun(from, maxOp);
            if (run == null) {
                return false;
            }
            if (clipToInFlight(run) != null) {
                return true;
            }
            from = run[0] + run[1];
        }
        return false;
    }

    private boolean awaitCapacity(long len) throws InterruptedException {
        lock.lock();
        try {
            if (opsInFlight < MAX_IN_FLIGHT && (opsInFlight == 0 || bytesInFlight + len <= params.bufSize())) {
                return true;
            }
            opDone.await(IDLE_POLL_NANOS, TimeUnit.NANOSECONDS);
            return opsInFlight < MAX_IN_FLIGHT && (opsInFlight == 0 || bytesInFlight + len <= params.bufSize());
        } finally {
            lock.unlock();
        }
    }

    private void awaitOpDone(long nanos) throws InterruptedException {
        lock.lock();
        try {
            if (opsInFlight > 0) {
                opDone.awaitNanos(nanos);
            }
        } finally {
            lock.unlock();
        }
    }

    private void awaitAllOps() {
        lock.lock();
        try {
            while (opsInFlight > 0) {
                opDone.awaitUninterruptibly();
            }
        } finally {
            lock.unlock();
        }
    }

    private int opsInFlight() {
        lock.lock();
        try {
            return opsInFlight;
        } finally {
            lock.unlock();
        }
    }

    /**
     * copy-mode=write-blocking (QEMU 7.2 bdrv_mirror_top_do_write() with copy_to_target): a
     * guest write goes to the source and then, before the guest sees it complete, to the target.
     * <ul>
     *   <li>It first waits for copies in flight that share a granule with it and holds its
     *       granules while it runs (active_write_prepare()), so no background copy of older data
     *       can land on the target after it, and two active writes to one granule never clear
     *       each other's marks.</li>
     *   <li>The source write marks the bitmap (the source records every write). Then, as
     *       do_sync_target_write(): a partly written first or last granule that is dirty anyway
     *       is left to the background copy (cut off the write), the granules covered whole are
     *       cleared, and the rest is written to the target; len and offset grow by it.</li>
     *   <li>A failed target write marks its granules dirty again and is the job's error, not
     *       the guest's: BLOCK_JOB_ERROR at once with the {@code on-target-error} action
     *       ({@link JobContext#noteError}); stop pauses the job; report stops the active copying
     *       and fails the job at its next step, as QEMU sets job->ret.</li>
     * </ul>
     */
    private void activeWrite(BlockNode child, long off, long len, JobTopFilter.WriteOp op) throws IOException {
        JobContext ctx = activeCtx;
        if (ctx == null || ctx.cancelRequested()) {
            op.apply(child);
            return;
        }
        long g = bitmap.granularity();
        long size = bitmap.length();
        long[] held = {alignDown(off, g), Math.min(size, alignUp(off + len, g)) - alignDown(off, g)};
        lock.lock();
        try {
            while (overlapsInFlight(held[0], held[1])) {
                opDone.awaitUninterruptibly();
            }
            inFlight.add(held);
            activeWrites++;
        } finally {
            lock.unlock();
        }
        try {
            op.apply(child);
            long from = off;
            long to = off + len;
            if (from % g != 0 && bitmap.isDirty(from)) {
                from = alignUp(from, g);
            }
            if (to % g != 0 && to < size && from < to && bitmap.isDirty(to - 1)) {
                to = alignDown(to, g);
            }
            if (from >= to) {
                return;
            }
            long whole0 = alignUp(from, g);
            long whole1 = to >= size ? size : alignDown(to, g);
            if (whole1 > whole0) {
                bitmap.clear(whole0, whole1 - whole0);
            }
            // job_progress_increase_remaining() before the write, job_progress_update() after it
            // (the loop recomputes len from offset and the bitmap, which agrees, when it next runs)
            ctx.addLen(to - from);
            try {
                op.applyPart(target, from, to - from);
                ctx.addOffset(to - from);
            } catch (IOException e) {
                bitmap.mark(held[0], held[1]);
                IoError err = IoError.wrap(e);
                if (ctx.noteError(params.onTargetError(), IoOperation.WRITE, err) == ErrorAction.REPORT) {
                    lock.lock();
                    try {
                        if (activeReport == null) {
                            activeReport = err;
                        }
                    } finally {
                        lock.unlock();
                    }
                    activeCtx = null;
                    filter.setActiveCopy(null);
                }
            }
        } finally {
            lock.lock();
            try {
                inFlight.remove(held);
                activeWrites--;
                opDone.signalAll();
            } finally {
                lock.unlock();
            }
        }
    }

    private static long alignDown(long v, long g) {
        return v - v % g;
    }

    private static long alignUp(long v, long g) {
        long r = v % g;
        return r == 0 ? v : v + g - r;
    }

    private boolean overlapsInFlight(long start, long len) {
        for (long[] r : inFlight) {
            if (r[0] < start + len && start < r[0] + r[1]) {
                return true;
            }
        }
        return false;
    }

    /** No more active copying: later guest writes only go to the source (and its bitmap). */
    private void stopActiveCopy() {
        activeCtx = null;
        filter.setActiveCopy(null);
        // the active writes already under way finish (their target writes included) first
        lock.lock();
        try {
            while (activeWrites > 0) {
                opDone.awaitUninterruptibly();
            }
        } finally {
            lock.unlock();
        }
    }

    /** An active write's target error with action report fails the job at its next step. */
    private void rethrowActiveReport() throws IoError {
        IoError e;
        lock.lock();
        try {
            e = activeReport;
        } finally {
            lock.unlock();
        }
        if (e != null) {
            throw e;
        }
    }

    private void rethrowFailure() throws Exception {
        Throwable t;
        lock.lock();
        try {
            t = opFailure;
        } finally {
            lock.unlock();
        }
        if (t == null) {
            return;
        }
        if (t instanceof Exception e) {
            throw e;
        }
        throw (Error) t;
    }

    private void dispatch(JobContext ctx, long off, long len, JobContext.InFlight request) {
        long[] range = {off, len};
        lock.lock();
        try {
            opsInFlight++;
            bytesInFlight += len;
            inFlight.add(range);
        } finally {
            lock.unlock();
        }
        opThreads.execute(() -> {
            boolean done = false;
            try {
                done = copy(ctx, off, len, request);
            } catch (JobCancelledException e) {
                // the job is going away; nothing to record
            } catch (Throwable t) {
                lock.lock();
                try {
                    if (opFailure == null) {
                        opFailure = t;
                    }
                } finally {
                    lock.unlock();
                }
            } finally {
                request.close();
                lock.lock();
                try {
                    // copied: progress; not: dirty again; either way no longer in flight, at once
                    if (done) {
                        ctx.addOffset(len);
                    } else {
                        bitmap.mark(off, len);
                    }
                    opsInFlight--;
                    bytesInFlight -= len;
                    inFlight.remove(range);
                    opDone.signalAll();
                } finally {
                    lock.unlock();
                }
            }
        });
    }

    /**
     * Copies one range, applying the error policies. Returns true when the range is on the
     * target, false when an ignored error left it to be copied again. {@code first} is the
     * in-flight request the dispatcher opened; it is closed before the error policy runs (a
     * {@code stop} pauses the job, and a job is paused only with nothing in flight), and a retry
     * after the resume opens a new one.
     */
    private boolean copy(JobContext ctx, long off, long len, JobContext.InFlight first) throws Exception {
        JobContext.InFlight request = first;
        while (true) {
            IoOperation op = IoOperation.READ;
            IOException failed;
            try {
                long pos = off;
                long end = off + len;
                while (pos < end) {
                    Extent e = BlockStatus.above(source, null, pos, end - pos);
                    int n = (int) e.length();
                    if (e.allocation() == Allocation.DATA) {
                        ByteBuffer buf = takeBuffer(n);
                        try {
                            op = IoOperation.READ;
                            source.read(pos, buf);
                            buf.flip();
                            op = IoOperation.WRITE;
                            target.write(pos, buf, false);
                        } finally {
                            returnBuffer(buf);
                        }
                    } else {
                        op = IoOperation.WRITE;
                        target.writeZeroes(pos, n, params.unmap());
                    }
                    pos += n;
                }
                return true; // progress is counted by the dispatcher, with the in-flight bytes
            } catch (IOException e) {
                failed = e;
            } finally {
                request.close();
            }
            BlockdevOnError policy = op == IoOperation.READ ? params.onSourceError() : params.onTargetError();
            ErrorAction a = ctx.handleError(policy, op, IoError.wrap(failed), off);
            if (a == ErrorAction.IGNORE) {
                // mirror: the range is marked dirty again and retried later (seed 000)
                return false;
            }
            // STOP: resumed; copy the same range again
            request = ctx.beginInFlight();
        }
    }

    private ByteBuffer takeBuffer(int n) {
        if (n > MAX_OP_BYTES) {
            return ByteBuffer.allocateDirect(n);
        }
        ByteBuffer b = buffers.poll();
        if (b == null) {
            b = ByteBuffer.allocateDirect(MAX_OP_BYTES);
        }
        b.clear().limit(n);
        return b;
    }

    private void returnBuffer(ByteBuffer b) {
        if (b.capacity() == MAX_OP_BYTES) {
            buffers.offer(b);
        }
    }

    // ------------------------------------------------------------------ finish

    /**
     * QEMU 7.2 mirror_prepare() → mirror_exit_common(): the pivot happens here, where a failure
     * still fails the job (BLOCK_JOB_COMPLETED with error; {@link #abort} then puts the device
     * back on the source). Once this returned the job has pivoted, whatever arrives next.
     */
    @Override
    public void prepare() throws Exception {
        if (!pivotPending) {
            return;
        }
        // Drained over everything that reaches the source: a write that reached the source
        // without passing the filter after the final sync (an export on the node name) is
        // still in the bitmap and is copied now, so the target misses nothing at the pivot.
        try (DrainedSection s = actions.drain()) {
            copyLeftovers();
            actions.pivot();
        }
        pivoted = true;
    }

    /** Copies, synchronously, what the bitmap still holds (the caller keeps everything drained). */
    private void copyLeftovers() throws IOException {
        long size = source.length();
        long[] run;
        ByteBuffer buf = null;
        while ((run = bitmap.nextDirtyRun(0, MAX_OP_BYTES)) != null) {
            long off = run[0];
            long len = Math.min(run[1], size - off);
            bitmap.clear(run[0], run[1]);
            if (len <= 0) {
                continue;
            }
            if (buf == null || buf.capacity() < len) {
                buf = ByteBuffer.allocateDirect((int) len);
            }
            buf.clear().limit((int) len);
            source.read(off, buf);
            buf.flip();
            target.write(off, buf, false);
        }
        if (buf != null) {
            target.flush();
        }
    }

    @Override
    public void abort() {
        filter.setWriteThrough(null);
        actions.detach();
    }

    @Override
    public void clean() {
        if (!pivoted) {
            filter.setWriteThrough(null);
            actions.detach();
        }
        actions.release(pivoted);
    }

    /** True once {@link #prepare} moved the device onto the target. */
    public boolean pivoted() {
        return pivoted;
    }
}
