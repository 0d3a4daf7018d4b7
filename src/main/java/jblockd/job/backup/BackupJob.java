package jblockd.job.backup;

import java.io.IOException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;

import jblockd.block.Allocation;
import jblockd.block.BlockNode;
import jblockd.block.BlockStatus;
import jblockd.block.Extent;
import jblockd.block.cbw.BlockCopy;
import jblockd.job.CopyWorkers;
import jblockd.job.JobCancelledException;
import jblockd.job.JobContext;
import jblockd.job.JobDriver;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.IoOperation;
import jblockd.qapi.JobType;
import jblockd.qapi.MirrorSyncMode;

/**
 * The backup job (QEMU block/backup.c): copies the clusters the {@link BlockCopy} bitmap still
 * holds from the source to the target, up to {@code workers} chunk copies in flight, while the
 * copy-before-write filter ({@link BackupGraph}) keeps the copy point-in-time.
 *
 * <h2>Error policy (SPEC §4, QEMU 7.2 backup_loop())</h2>
 * A failed chunk is released dirty again at once (so guest writes never wait on a failing or
 * stopped job), the round of copies ends (no new chunk starts, those in flight finish), and then
 * {@link JobContext#handleError} applies {@code on-source-error} (read side) or
 * {@code on-target-error} (write side), emitting one BLOCK_JOB_ERROR for the round:
 * <ul>
 *   <li>report: the job fails with the error's strerror;</li>
 *   <li>stop: the job pauses with io-status failed/nospace; after {@code block-job-resume} the
 *       chunk is copied again;</li>
 *   <li>ignore: the chunk is copied again, after the framework's back-off when it keeps failing
 *       without progress (SPEC §7). A transient error thus leaves a complete target and a job
 *       that ends without error; a persistent one is retried until the job is cancelled.</li>
 * </ul>
 * {@code offset} counts bytes copied (or found to be zero); {@code len} the bytes to process
 * (sync=top: only what the top layer allocates).
 *
 * <h2>The save buffer (issue 17)</h2>
 * When the {@link BlockCopy} saves copy-before-writes (a {@code cbw-buffer-size} above zero), a
 * drainer thread of the job writes the saved old data to the target while the job's own copy goes
 * on: ahead of it, without the rate limit (a copy-before-write is the guest's, as in QEMU, and never
 * rate-limited), passing the job's pause points like every job request (a paused job writes
 * nothing). A failed drain ends the round like a failed chunk and meets {@code on-target-error}:
 * the entry stays in the buffer, so stop/resume and ignore retry it, and report fails the job. The
 * run ends only once the buffer is empty: the target then holds every saved range.
 *
 * <h2>Cancel and shutdown</h2>
 * A cancelled backup (block-job-cancel, job-cancel, quit, SIGTERM) stops starting chunks, waits
 * for those in flight, removes the filter and flushes and closes the target. The target is then
 * a consistent image (qcow2 passes {@code qemu-img check}) whose content is simply incomplete:
 * nothing in it claims completeness, the job's end event ({@code BLOCK_JOB_CANCELLED}, or none
 * at shutdown) is what says so. jblockd never deletes the target file: it is the user's.
 *
 * <h2>Grouped transactions and bitmaps</h2>
 * In a {@code transaction} with {@code completion-mode: grouped} the job's end is its job
 * transaction's ({@link jblockd.job.JobTxn}): {@link #commit} runs only once every backup of the
 * group succeeded, and when any of them fails or is cancelled every one runs {@link #abort}
 * (QEMU backup_commit / backup_abort). That is where a sync bitmap (sync=incremental|bitmap, or an
 * output bitmap of sync=full|top) is to be settled by its bitmap-mode, as QEMU's backup_cleanup_sync_bitmap()
 * does ({@link SyncBitmap}): {@code on-success} abdicates in commit and reclaims in abort,
 * {@code always} abdicates in both, {@code never} reclaims in both; a job aborted by its group
 * then follows its bitmap-mode like a failure of its own, with no group-specific code.
 */
public final class BackupJob implements JobDriver {
    private final BlockCopy copy;
    private final BlockNode topLayer;
    private final MirrorSyncMode sync;
    private final BlockdevOnError onSourceError;
    private final BlockdevOnError onTargetError;
    private final int workers;
    private final BackupGraph graph;
    private final SyncBitmap syncBitmap;
    /**
     * The cluster the next claim starts from; kept across rounds (job thread only), so that a
     * round after a failure goes on with the rest and meets a chunk that keeps failing last.
     */
    private long next;

    /**
     * @param topLayer the source node whose own allocation defines sync=top
     * @param graph    the filter insertion to undo when the job ends, and the target to close
     */
    public BackupJob(BlockCopy copy, BlockNode topLayer, MirrorSyncMode sync, BlockdevOnError onSourceError,
                     BlockdevOnError onTargetError, int workers, BackupGraph graph) {
        this(copy, topLayer, sync, onSourceError, onTargetError, workers, graph, null);
    }

    /**
     * @param syncBitmap the frozen {@code bitmap} of the backup (any sync mode but none), settled
     *                   at the job's end by its bitmap-mode; null without one
     */
    public BackupJob(BlockCopy copy, BlockNode topLayer, MirrorSyncMode sync, BlockdevOnError onSourceError,
                     BlockdevOnError onTargetError, int workers, BackupGraph graph, SyncBitmap syncBitmap) {
        this.syncBitmap = syncBitmap;
        this.copy = copy;
        this.topLayer = topLayer;
        this.sync = sync;
        this.onSourceError = onSourceError;
        this.onTargetError = onTargetError;
        this.workers = Math.max(1, workers);
        this.graph = graph;
    }

    @Override
    public JobType type() {
        return JobType.BACKUP;
    }

    public BlockCopy blockCopy() {
        return copy;
    }

    @Override
    public void run(JobContext ctx) throws Exception {
        if (copy.savesBeforeWrite()) {
            // not joined: once the buffer is empty or the drains are stopped it ends by itself, and
            // one waiting at a pause point holds nothing
            Thread.ofVirtual().name("backup-drain-" + ctx.id()).start(() -> drainSaved(ctx));
        }
        try {
            // len was set to the full size when the job was created (visible before the reply).
            if (sync == MirrorSyncMode.TOP) {
                skipUnallocated(ctx);
            }
            if (sync == MirrorSyncMode.NONE) {
                // Only the filter copies (image fleecing); the job's normal end is a cancel.
                while (true) {
                    ctx.sleep(TimeUnit.SECONDS.toNanos(1));
                }
            }
            copyDirty(ctx);
        } finally {
            copy.stopDrains();
        }
    }

    /**
     * The drainer: writes saved copy-before-writes to the target, oldest first, until drains are
     * stopped. Each write is a job request ({@link JobContext#beginInFlight}: a pause waits for it
     * and none starts while paused). A failed write stays with the buffer for the job's thread to
     * meet in {@link #copyRound}; a cancel ends the drainer at its next pause point.
     */
    private void drainSaved(JobContext ctx) {
        try {
            while (copy.awaitSaved()) {
                JobContext.InFlight request = ctx.beginInFlight();
                try {
                    copy.drainOne();
                } catch (BlockCopy.CopyError e) {
                    // kept as copy.drainError(); awaitSaved waits until the job retries
                } finally {
                    request.close();
                }
            }
        } catch (JobCancelledException e) {
            // the job's thread sees the cancel too
        }
    }

    /** The save buffer's use for query-block-jobs; null without one. */
    @Override
    public jblockd.job.BufferUse bufferUse() {
        BlockCopy.SaveUse u = copy.saveUse();
        return u == null ? null : new jblockd.job.BufferUse(u.size(), u.used(), u.saves(), u.fallbacks());
    }

    /** sync=top: clusters the top layer does not allocate are not copied and not counted. */
    private void skipUnallocated(JobContext ctx) throws IOException, JobCancelledException {
        long len = copy.length();
        long pos = 0;
        while (pos < len) {
            ctx.pausePoint();
            Extent e = BlockStatus.ofLayer(topLayer, pos, len - pos);
            if (e.allocation() == Allocation.UNALLOCATED) {
                ctx.addLen(-copy.reset(pos, e.length()));
            }
            pos = e.end();
        }
    }

    /**
     * QEMU 7.2 backup_loop(): copy rounds until a round ends with nothing left to copy. A round
     * that met a failed chunk has ended with every chunk in flight finished and the failed one
     * dirty again; only then is the error policy applied, once per round, here on the job's
     * thread: report fails the job, stop pauses it (nothing is in flight) and resume retries,
     * ignore retries after the framework's back-off.
     */
    private void copyDirty(JobContext ctx) throws Exception {
        while (true) {
            BlockCopy.CopyError failed = copyRound(ctx);
            if (failed == null) {
                return;
            }
            BlockdevOnError policy = failed.operation() == IoOperation.READ ? onSourceError : onTargetError;
            ctx.handleError(policy, failed.operation(), failed, failed.offset());
        }
    }

    /**
     * One round (QEMU's block_copy_async() over the whole bitmap): dispatches chunk copies, up
     * to {@code workers} in flight, until nothing is dirty or a chunk failed, and waits for every
     * copy it started. Returns the first failed chunk's error, or null when all is copied.
     *
     * @throws JobCancelledException when cancelled
     * @throws Exception             a copy that failed other than with an I/O error (a bug): the job fails
     */
    private BlockCopy.CopyError copyRound(JobContext ctx) throws Exception {
        copy.retryDrains(); // a drain error of the last round met its policy: drain again
        Semaphore slots = new Semaphore(workers);
        AtomicReference<BlockCopy.CopyError> failed = new AtomicReference<>();
        AtomicReference<Throwable> broken = new AtomicReference<>();
        long charge = 0;
        try (ExecutorService inFlight = CopyWorkers.start("backup-copy-" + ctx.id(), workers)) {
            while (failed.get() == null && broken.get() == null) {
                BlockCopy.CopyError drain = copy.drainError();
                if (drain != null) {
                    failed.compareAndSet(null, drain); // ends the round like a failed chunk
                    break;
                }
                // Charge the previous chunk and wait here, before claiming the next one, so no
                // cluster is held while the job sleeps or is paused (guest writes would wait).
                ctx.rateLimit(charge);
                charge = 0;
                copy.yieldToGuests();
                // Counted from before the claim to after the release: a pause waits for it, and
                // none starts while the job is paused.
                JobContext.InFlight request = ctx.beginInFlight();
                try {
                    next = copy.skipZeroes(next);
                } catch (BlockCopy.CopyError e) {
                    // a status error: let the chunk copy meet (and report) it with its policy
                }
                BlockCopy.Claim c = copy.claimNext(next);
                if (c == null && next > 0) {
                    c = copy.claimNext(0); // wrap: clusters left dirty behind the cursor (a chunk that failed, a guest's failed copy-before-write)
                }
                if (c == null) {
                    request.close();
                    if (!copy.hasWork()) {
                        break;
                    }
                    // The rest is in flight (our workers or guest copy-before-writes).
                    next = 0;
                    ctx.sleep(TimeUnit.MILLISECONDS.toNanos(2));
                    continue;
                }
                if (failed.get() != null || broken.get() != null) {
                    // a chunk failed meanwhile: its clusters may be this claim, dirty again for the
                    // next round, which meets the error first
                    copy.release(c, false);
                    request.close();
                    break;
                }
                BlockCopy.Claim claim = c;
                next = claim.first() + claim.count();
                charge = copy.bytes(claim);
                slots.acquireUninterruptibly();
                inFlight.submit(() -> {
                    try {
                        // the failure is recorded before the clusters are dirty again (see the check above)
                        copy.copyAndRelease(claim, t -> {
                            if (t instanceof BlockCopy.CopyError e) {
                                failed.compareAndSet(null, e);
                            } else {
                                broken.compareAndSet(null, t);
                            }
                        });
                    } catch (BlockCopy.CopyError e) {
                        // recorded above (the round's first failure is the one it reports)
                    } catch (Throwable t) {
                        // recorded above too, unless ending the claim itself failed: a bug
                        broken.compareAndSet(null, t);
                    } finally {
                        request.close();
                        slots.release();
                    }
                });
            }
        }
        Throwable bug = broken.get();
        if (bug instanceof Exception e) {
            throw e;
        }
        if (bug != null) {
            throw (Error) bug;
        }
        return failed.get();
    }

    /**
     * QEMU's .prepare: the last step that can still fail the job. The target's data is made
     * durable before BLOCK_JOB_COMPLETED; if it cannot be, the job ends with that error.
     */
    @Override
    public void prepare() throws IOException {
        copy.target().flush();
    }

    /** QEMU backup_commit(): the job (and its whole group) succeeded. */
    @Override
    public void commit() {
        if (syncBitmap != null) {
            syncBitmap.settle(true, copy);
        }
    }

    /** QEMU backup_abort(): failed, cancelled, aborted by its group or rolled back unstarted. */
    @Override
    public void abort() {
        if (syncBitmap != null) {
            syncBitmap.settle(false, copy);
        }
    }

    /** Both ends: the filter leaves the graph, the target is flushed and, if we opened it, closed. */
    @Override
    public void clean() {
        graph.remove();
    }
}
