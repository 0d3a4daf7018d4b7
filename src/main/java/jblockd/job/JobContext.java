package jblockd.job;

import jblockd.block.IoError;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.ErrorAction;
import jblockd.qapi.IoOperation;

/**
 * What a {@link JobDriver} sees of its job while it runs. Thread-safe: a driver may call it
 * from the job thread and from the helper threads it starts for requests in flight.
 * <p>
 * Blocking calls ({@link #pausePoint}, {@link #rateLimit}, {@link #sleep}, a {@code stop}
 * from {@link #handleError}) return early or throw {@link JobCancelledException} as soon as
 * the job is force-cancelled, and hold while the job is paused. A driver calls one of them at
 * least once per chunk (at most about 1 MiB of I/O), which is what makes pause and cancel take
 * effect within one chunk.
 */
public interface JobContext {

    /** The job id (also the {@code device} member of BLOCK_JOB_* events). */
    String id();

    /**
     * QEMU's job_pause_point(): if a pause is requested, reports {@code paused} (or
     * {@code standby} when ready) and waits for resume, then the old status again.
     *
     * @throws JobCancelledException when the job is force-cancelled
     */
    void pausePoint() throws JobCancelledException;

    /**
     * One request of the job on its nodes that outlives the call that started it (a chunk copy
     * handed to a helper thread). {@link #close} ends it; closing twice is harmless.
     */
    interface InFlight extends AutoCloseable {
        @Override
        void close();
    }

    /**
     * Opens an {@link InFlight} request: first a pause point, then the job counts the request
     * until it is closed. A job is reported paused ({@code paused: true}, J(paused)) only once
     * none is open, and none opens while it is paused, so a paused job touches neither source
     * nor target until resume. A driver whose requests run beside its own thread (backup's
     * workers, mirror's operations) opens one per request before it claims or clears any range,
     * and closes it before anything that may pause (its error policy).
     *
     * @throws JobCancelledException when the job is force-cancelled
     */
    InFlight beginInFlight() throws JobCancelledException;

    /** A cancel was requested (soft or force). */
    boolean cancelRequested();

    /** The job is force-cancelled: it will end CANCELLED; stop at once. */
    boolean isCancelled();

    /**
     * Charges {@code bytes} against the job's speed limit, first waiting as long as the limit
     * demands (0 = unlimited). Call it before dispatching each request. The speed is read live,
     * so {@code block-job-set-speed} applies to the very next wait. Includes a pause point.
     */
    void rateLimit(long bytes) throws JobCancelledException;

    /** Sleeps, waking early for pause, cancel or a speed change; includes a pause point. */
    void sleep(long nanos) throws JobCancelledException;

    /** Total bytes of work ({@code len}); may change while running. */
    void setLen(long len);

    void addLen(long delta);

    /** Progress ({@code offset}): bytes done. */
    void addOffset(long delta);

    void setOffset(long offset);

    long len();

    long offset();

    /** Current speed limit in bytes/s (0 = none). */
    long speed();

    /** Moves the job to READY and emits BLOCK_JOB_READY (mirror, active commit). */
    void ready();

    /** True while READY or STANDBY. */
    boolean isReady();

    /**
     * Applies an error policy to a failed request (seed 000; reference/errors.md §1), for the
     * request's byte {@code offset} (-1 when unknown). Every call emits
     * {@code BLOCK_JOB_ERROR {device: job id, operation, action}} with the resolved action, then:
     * <ul>
     *   <li>{@code report}: throws {@code e}; the driver lets it propagate, the job fails with its
     *       strerror;</li>
     *   <li>{@code ignore}: returns {@link ErrorAction#IGNORE}; the caller decides what ignoring
     *       means (skip the chunk, mark it dirty again). If the same request (same offset, or no
     *       progress since the previous ignored error) keeps failing, it first sleeps with an
     *       exponential back-off, 10 ms up to 1 s, so a persistent error never spins (SPEC §7);</li>
     *   <li>{@code stop} ({@code enospc}/{@code auto} for ENOSPC): the job pauses as if the user
     *       paused it, io-status {@code failed} ({@code nospace} for ENOSPC), waits for
     *       {@code block-job-resume} (which resets io-status to {@code ok}) and returns
     *       {@link ErrorAction#STOP}: the caller retries the same request.</li>
     * </ul>
     * {@code enospc}/{@code auto} act as {@code report} for any other errno.
     *
     * @throws JobCancelledException when cancelled while stopped or backing off
     */
    ErrorAction handleError(BlockdevOnError policy, IoOperation op, IoError e, long offset)
            throws IoError, JobCancelledException;

    /**
     * The policy for a failed request that is not the job's own and must not wait (a guest
     * write a write-blocking mirror copies to its target, QEMU's mirror_error_action() from the
     * guest's coroutine): emits BLOCK_JOB_ERROR with the resolved action and, for {@code stop},
     * pauses the job as {@link #handleError} does, at the job's next pause point. Never blocks,
     * never throws; what {@code report} and {@code ignore} mean is the caller's.
     */
    ErrorAction noteError(BlockdevOnError policy, IoOperation op, IoError e);

    /** {@link #handleError(BlockdevOnError, IoOperation, IoError, long)} with an unknown offset. */
    default ErrorAction handleError(BlockdevOnError policy, IoOperation op, IoError e)
            throws IoError, JobCancelledException {
        return handleError(policy, op, e, -1);
    }

    /**
     * Records an error that was ignored under policy {@code ignore} so that the job, once its
     * work is done, still ends with this error (stream, SPEC §4 / seed 000; backup retries instead).
     * The first one recorded wins.
     */
    void recordIgnoredError(IoError e);
}
