package jblockd.job.backup;

import java.io.IOException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.logging.Level;
import java.util.logging.Logger;

import jblockd.block.Allocation;
import jblockd.block.BlockNode;
import jblockd.block.BlockStatus;
import jblockd.block.Extent;
import jblockd.block.cbw.BlockCopy;
import jblockd.job.JobCancelledException;
import jblockd.job.JobContext;
import jblockd.job.JobDriver;
import jblockd.job.ErrorPolicy;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.ErrorAction;
import jblockd.qapi.IoOperation;
import jblockd.qapi.JobType;
import jblockd.qapi.MirrorSyncMode;

/**
 * The backup job (QEMU block/backup.c): copies the clusters the {@link BlockCopy} bitmap still
 * holds from the source to the target, up to {@code workers} chunk copies in flight, while the
 * copy-before-write filter ({@link BackupGraph}) keeps the copy point-in-time.
 *
 * <h2>Error policy (SPEC §4 over QEMU 7.2)</h2>
 * A failed chunk releases its clusters first (so guest writes never wait on a stopped job),
 * then {@link JobContext#handleError} applies {@code on-source-error} (read side) or
 * {@code on-target-error} (write side):
 * <ul>
 *   <li>report: no more chunks are started; the job fails with the error's strerror;</li>
 *   <li>stop: the job pauses with io-status failed/nospace; the chunk stays dirty and is copied
 *       again after {@code block-job-resume};</li>
 *   <li>ignore: the chunk is dropped (not copied, not counted in {@code offset}) and the job
 *       carries on to the end — and then ends with the error: {@code BLOCK_JOB_COMPLETED}
 *       carries {@code error}. This follows SPEC §4 ("backup/stream end with an error"), which
 *       is explicit, where QEMU 7.2 reports success (reference/errors.md §1): a backup that
 *       silently lacks data must not look complete.</li>
 * </ul>
 * {@code offset} counts bytes copied (or found to be zero); {@code len} the bytes to process
 * (sync=top: only what the top layer allocates).
 *
 * <h2>Cancel and shutdown</h2>
 * A cancelled backup (block-job-cancel, job-cancel, quit, SIGTERM) stops starting chunks, waits
 * for those in flight, removes the filter and flushes and closes the target. The target is then
 * a consistent image (qcow2 passes {@code qemu-img check}) whose content is simply incomplete:
 * nothing in it claims completeness, the job's end event ({@code BLOCK_JOB_CANCELLED}, or none
 * at shutdown) is what says so. jblockd never deletes the target file: it is the user's.
 */
public final class BackupJob implements JobDriver {
    private static final Logger LOG = Logger.getLogger(BackupJob.class.getName());

    private final BlockCopy copy;
    private final BlockNode topLayer;
    private final MirrorSyncMode sync;
    private final BlockdevOnError onSourceError;
    private final BlockdevOnError onTargetError;
    private final int workers;
    private final BackupGraph graph;
    /**
     * Workers between a failed chunk and the pause its {@code stop} policy makes: the chunk is
     * dirty again already, and the dispatcher must not copy it (nor anything else) before the
     * job has paused, so the job stops where the error was, as QEMU's single coroutine does.
     */
    private final AtomicInteger stopping = new AtomicInteger();

    /**
     * @param topLayer the source node whose own allocation defines sync=top
     * @param graph    the filter insertion to undo when the job ends, and the target to close
     */
    public BackupJob(BlockCopy copy, BlockNode topLayer, MirrorSyncMode sync, BlockdevOnError onSourceError,
                     BlockdevOnError onTargetError, int workers, BackupGraph graph) {
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

    private void copyDirty(JobContext ctx) throws Exception {
        Semaphore slots = new Semaphore(workers);
        AtomicReference<Exception> failure = new AtomicReference<>();
        long charge = 0;
        long next = 0;
        try (ExecutorService inFlight = Executors.newVirtualThreadPerTaskExecutor()) {
            while (failure.get() == null) {
                // Charge the previous chunk and wait here, before claiming the next one, so no
                // cluster is held while the job sleeps or is paused (guest writes would wait).
                ctx.rateLimit(charge);
                charge = 0;
                if (failure.get() != null) {
                    break;
                }
                if (stopping.get() > 0) {
                    ctx.sleep(TimeUnit.MILLISECONDS.toNanos(1)); // a pause point: the stop lands here
                    continue;
                }
                try {
                    next = copy.skipZeroes(next);
                } catch (BlockCopy.CopyError e) {
                    // a status error: let the chunk copy meet (and report) it with its policy
                }
                BlockCopy.Claim c = copy.claimNext(next);
                if (c == null && next > 0) {
                    c = copy.claimNext(0); // wrap: chunks released after a stop or failure are dirty again
                }
                if (c == null) {
                    if (!copy.hasWork()) {
                        break;
                    }
                    // The rest is in flight (our workers or guest copy-before-writes).
                    next = 0;
                    ctx.sleep(TimeUnit.MILLISECONDS.toNanos(2));
                    continue;
                }
                BlockCopy.Claim claim = c;
                next = claim.first() + claim.count();
                charge = copy.bytes(claim);
                slots.acquireUninterruptibly();
                inFlight.submit(() -> {
                    try {
                        copyChunk(ctx, claim, failure);
                    } finally {
                        slots.release();
                    }
                });
            }
        }
        Exception f = failure.get();
        if (f != null) {
            throw f;
        }
        if (ctx.isCancelled()) {
            throw new JobCancelledException();
        }
    }

    private void copyChunk(JobContext ctx, BlockCopy.Claim c, AtomicReference<Exception> failure) {
        try {
            copy.copy(c);
            copy.release(c, true);
        } catch (BlockCopy.CopyError e) {
            BlockdevOnError policy = e.operation() == IoOperation.READ ? onSourceError : onTargetError;
            ErrorAction action = ErrorPolicy.resolve(policy, e.errno());
            boolean ignore = action == ErrorAction.IGNORE;
            boolean stop = action == ErrorAction.STOP;
            if (stop) {
                stopping.incrementAndGet(); // before the release: the dispatcher holds off
            }
            // ignore: the chunk is given up (not copied, not counted; see the class javadoc).
            // Otherwise it is dirty again, released before the policy may stop the job, so
            // that guest writes to it copy it themselves instead of waiting for a resume.
            copy.release(c, ignore);
            try {
                ctx.handleError(policy, e.operation(), e, c.first() * copy.clusterSize());
                if (ignore) {
                    ctx.recordIgnoredError(e);
                }
            } catch (JobCancelledException cancelled) {
                // the dispatcher sees the cancel at its next pause point
            } catch (Exception report) {
                failure.compareAndSet(null, report);
            } finally {
                if (stop) {
                    stopping.decrementAndGet(); // resumed (or cancelled): the dispatcher goes on
                }
            }
        } catch (RuntimeException e) {
            copy.release(c, false);
            failure.compareAndSet(null, e);
        }
    }

    /** Success: the target's data is made durable before BLOCK_JOB_COMPLETED. */
    @Override
    public void commit() {
        try {
            copy.target().flush();
        } catch (IOException e) {
            LOG.log(Level.WARNING, "backup: flushing the target failed", e);
        }
    }

    /** Both ends: the filter leaves the graph, the target is flushed and, if we opened it, closed. */
    @Override
    public void clean() {
        graph.remove();
    }
}
