package jblockd.job;

import jblockd.qapi.JobType;
import jblockd.qapi.QmpError;

/**
 * What one kind of job does (QEMU include/qemu/job.h {@code JobDriver}): one mandatory
 * {@link #run}, optional lifecycle hooks. The framework ({@link Job}) owns the status, events,
 * pause/cancel, speed and error policy; a driver only copies data through its
 * {@link JobContext}.
 *
 * <h2>Lifecycle (reference/jobs.md §5)</h2>
 * <pre>
 *   run(ctx)  returns normally ─► waiting ─► pending ─► prepare() ─► commit() ─► clean() ─► COMPLETED
 *             throws / cancelled ─────────► aborting ──────────────► abort()  ─► clean() ─► COMPLETED{error} | CANCELLED
 * </pre>
 * then concluded and (auto-dismiss) null. Whatever can still fail at the end (a target flush,
 * a pivot, rewriting a backing link) belongs in {@code prepare} (QEMU 7.2 does the mirror pivot
 * in mirror_prepare(), the rebase in stream_prepare() / commit_prepare()): its failure turns a
 * success into the abort path and the job ends with that error. Once {@code prepare} returned,
 * the job's outcome is success whatever arrives next (a cancel is too late).
 * {@code commit}/{@code abort}/{@code clean} cannot fail (QEMU's are void): they only do what
 * cannot go wrong; an exception there is a bug, logged.
 * <p>
 * Every job ends through its {@link JobTxn}. A job of a grouped transaction waits in
 * {@code waiting} until every member finished its run; then all prepare and, only if all
 * prepared, all commit. So {@code abort} may follow a successful {@code prepare} (another member
 * failed in its prepare), and a job may be aborted, as cancelled, because another member failed:
 * {@code abort} must undo whatever {@code prepare} did.
 *
 * <h2>Threads</h2>
 * {@link #run} runs on the job's own virtual thread; it may start helper threads (bounded) but
 * must wait for them before returning. The hooks run on whichever thread finishes the job: the
 * job thread, or the QMP thread of {@code job-finalize} / {@code job-cancel} in pending.
 * {@link #complete} and {@link #cancel} are called from QMP threads while {@code run} works:
 * they only set flags the driver reads and never block.
 *
 * <h2>Cancel</h2>
 * A cancel request always makes {@link JobContext#cancelRequested()} true. Whether it also
 * force-cancels (pause points throw {@link JobCancelledException}, the job ends
 * {@code BLOCK_JOB_CANCELLED}) is decided by {@link #cancel}: by default always. Mirror and active
 * commit return {@code false} for a soft cancel after READY: their {@code run} then sees
 * {@code cancelRequested()}, stops without pivoting and returns normally, and the job ends
 * {@code BLOCK_JOB_COMPLETED} with no {@code aborting} (QEMU 7.2 mirror_cancel()).
 */
public interface JobDriver {

    /** The QMP job type ({@code backup}, {@code mirror}, ...). */
    JobType type();

    /**
     * Does the work. Return normally for success. Throw {@link JobCancelledException} (from a
     * context call) when cancelled, or any exception for a failure: its message (for an
     * {@link jblockd.block.IoError}, the errno's strerror) becomes {@code BLOCK_JOB_COMPLETED.error}.
     * Error policies are applied by the driver through {@link JobContext#handleError}.
     */
    void run(JobContext ctx) throws Exception;

    /**
     * Last step that may still fail, after a successful run (QEMU .prepare): backup's target
     * flush, mirror's pivot, stream/commit's rebase. Throwing fails the job with this error.
     */
    default void prepare() throws Exception {
    }

    /** After a successful prepare (QEMU .commit); cannot fail. */
    default void commit() {
    }

    /** Undoes what it must after failure or cancel (QEMU .abort). */
    default void abort() {
    }

    /** Releases resources on both paths (QEMU .clean), e.g. removes a filter node. */
    default void clean() {
    }

    /**
     * A bounded buffer the job holds data in, for query-block-jobs ({@code x-cbw-buffer}: a
     * backup's save buffer); null when it has none.
     */
    default BufferUse bufferUse() {
        return null;
    }

    /** True when the job type has a complete operation (mirror, active commit). */
    default boolean canComplete() {
        return false;
    }

    /**
     * {@code block-job-complete} on a READY/STANDBY job (the verb table is already checked):
     * asks {@code run} to finish. Throw {@link QmpError} to refuse.
     */
    default void complete() throws QmpError {
        throw QmpError.generic("complete not supported");
    }

    /**
     * A cancel request arrived ({@code force} as given by the user, {@code ready} true in
     * READY/STANDBY). Returns whether it is a force cancel. Drivers may also wake their own
     * waits here (cancel in-flight requests). Default: every cancel is a force cancel (QEMU's
     * job_cancel_async() without a driver .cancel).
     */
    default boolean cancel(boolean force, boolean ready) {
        return true;
    }
}
