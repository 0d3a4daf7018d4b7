package jblockd.job;

import java.util.HashSet;
import java.util.Objects;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;
import java.util.logging.Level;
import java.util.logging.Logger;

import jblockd.block.IoError;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.ErrorAction;
import jblockd.qapi.IoOperation;
import jblockd.qapi.IoStatus;
import jblockd.qapi.JobStatus;
import jblockd.qapi.JobType;
import jblockd.qapi.JobVerb;
import jblockd.qapi.QapiEvents;
import jblockd.qapi.QmpError;

/**
 * One block job: its status machine, pause/cancel/speed requests and the finish sequence
 * (QEMU job.c + blockjob.c). Created by {@link JobRegistry}, run by {@link JobRunner}.
 *
 * <h2>Threads and state</h2>
 * One lock guards every mutable member; one condition is signalled on every change (pause,
 * resume, cancel, speed, status), so every wait re-checks everything. QMP threads only set
 * requests ({@code pauseCount}, {@code cancelRequested}, speed) and read {@link #info()}; the
 * job's threads act on them at their next pause point (QEMU job_pause_point()).
 * {@link #transition} is the only writer of the status: it checks {@link Transitions} and emits
 * JOB_STATUS_CHANGE (nothing for a same-status move). Events are emitted under the lock, which
 * keeps their order equal to the order of the changes; {@link QapiEvents} never blocks.
 *
 * <h2>The end</h2>
 * A job's end is decided with the other members of its {@link JobTxn} (a job made alone is the
 * only member of its own): its thread reports the run's end ({@code waiting} or
 * {@code aborting}) and the transaction finalizes the members ({@link #finish}: the outcome is
 * claimed, then commit or abort, clean, the end event, concluded). A job never calls into its
 * transaction while holding its own lock.
 */
public final class Job {
    private static final Logger LOG = Logger.getLogger(Job.class.getName());
    /** How long a pause/resume/cancel command waits for the job to act before returning. */
    static final long COMMAND_WAIT_NANOS = TimeUnit.SECONDS.toNanos(5);
    private static final long BACKOFF_MIN_NANOS = TimeUnit.MILLISECONDS.toNanos(10);
    private static final long BACKOFF_MAX_NANOS = TimeUnit.SECONDS.toNanos(1);

    private final String id;
    private final JobDriver driver;
    private final QapiEvents events;
    private final boolean autoFinalize;
    private final boolean autoDismiss;
    private final Runnable onDismissed;
    /** Lets go of the job's nodes (the registry's part of dismissing), set once after creation. */
    private volatile Runnable onRelease;
    /** The transaction whose members end together; a job alone has one of its own. */
    private final JobTxn txn;
    private final Context context = new Context();

    private final ReentrantLock lock = new ReentrantLock();
    private final Condition changed = lock.newCondition();

    // --- guarded by lock ---
    private JobStatus status = JobStatus.UNDEFINED;
    private final RateLimiter limiter;
    private long len;
    private long offset;
    private int pauseCount;
    private boolean userPaused;
    /** Job threads currently waiting at a pause point. */
    private int atPausePoint;
    private JobStatus statusBeforePause;
    /** Job threads currently sleeping (rate limit, back-off). */
    private int sleeping;
    private boolean cancelRequested;
    private boolean forceCancel;
    private IoStatus ioStatus = IoStatus.OK;
    private Throwable failure;
    private IoError ignoredError;
    /**
     * Set once the finish sequence (prepare/commit/abort/clean + event) is under way: when its
     * transaction began to finalize its members, or when {@link #outcome} was claimed. From then
     * on a user's cancel changes nothing.
     */
    private boolean finishing;
    /** How the job ends; written only by {@link #claimFinishLocked}. */
    private Outcome outcome;
    /** Requests of the job still running on its nodes ({@link JobContext#beginInFlight}). */
    private int inFlight;
    private boolean started;
    private String errorText;
    private final Set<Long> failedSinceProgress = new HashSet<>();
    private int ignoreStreak;

    /** The three ends of a job and their events (QEMU job_finalize_single_locked()). */
    private enum Outcome {
        /** prepare and commit ran: BLOCK_JOB_COMPLETED without error. */
        SUCCESS,
        /** run or prepare failed: abort ran, BLOCK_JOB_COMPLETED with error. */
        FAILURE,
        /** force-cancelled before the finish: abort ran, BLOCK_JOB_CANCELLED. */
        CANCELLED
    }

    Job(String id, JobDriver driver, QapiEvents events, boolean autoFinalize, boolean autoDismiss,
        Runnable onDismissed, JobTxn txn) {
        this.id = Objects.requireNonNull(id);
        this.driver = Objects.requireNonNull(driver);
        this.events = Objects.requireNonNull(events);
        this.autoFinalize = autoFinalize;
        this.autoDismiss = autoDismiss;
        this.onDismissed = onDismissed;
        this.txn = Objects.requireNonNull(txn);
        this.limiter = new RateLimiter(0, System.nanoTime());
    }

    public String id() {
        return id;
    }

    public JobType type() {
        return driver.type();
    }

    public JobDriver driver() {
        return driver;
    }

    /** The job transaction it ends with (its own when it was made alone). */
    public JobTxn txn() {
        return txn;
    }

    boolean autoFinalize() {
        return autoFinalize;
    }

    /** The context handed to the driver (tests and drivers' helper threads use it too). */
    public JobContext context() {
        return context;
    }

    public JobStatus status() {
        lock.lock();
        try {
            return status;
        } finally {
            lock.unlock();
        }
    }

    /** A consistent snapshot for query-block-jobs / query-jobs. */
    public JobInfo info() {
        // the driver's own lock, taken before and apart from the job's (no order between them)
        BufferUse buffer = driver.bufferUse();
        lock.lock();
        try {
            boolean paused = pauseCount > 0 && quiescedLocked();
            boolean busy = started && !paused && sleeping == 0
                    && (status == JobStatus.RUNNING || status == JobStatus.READY);
            return new JobInfo(id, driver.type(), status, len, offset, limiter.speed(), busy, paused,
                    ioStatus, autoFinalize, autoDismiss, errorText, buffer);
        } finally {
            lock.unlock();
        }
    }

    // ------------------------------------------------------------------ status machine

    /**
     * The only status writer: checks {@link Transitions}, emits JOB_STATUS_CHANGE unless the
     * status stays the same. Caller holds the lock.
     *
     * @throws IllegalStateException for a move the table forbids (a bug, never user input)
     */
    void transition(JobStatus to) {
        assert lock.isHeldByCurrentThread();
        JobStatus from = status;
        if (from == to) {
            return;
        }
        if (!Transitions.allowed(from, to)) {
            throw new IllegalStateException("job '" + id + "': illegal transition " + from.wire()
                    + " -> " + to.wire());
        }
        status = to;
        events.jobStatusChange(id, to);
        changed.signalAll();
    }

    void onRelease(Runnable release) {
        this.onRelease = release;
    }

    /** undefined → created, at creation (QEMU job_create()). */
    void created(long speed) {
        lock.lock();
        try {
            transition(JobStatus.CREATED);
            limiter.setSpeed(speed, System.nanoTime());
        } finally {
            lock.unlock();
        }
    }

    /** created → null: creation failed after the job object existed (job_early_fail()). */
    void earlyFail() {
        lock.lock();
        try {
            toNullLocked();
        } finally {
            lock.unlock();
        }
        txn.remove(this);
    }

    /**
     * → null and out of the registry, under the job lock so that whoever waits for the end sees
     * both at once. Lock order is job → registry; the registry never calls a job under its lock.
     */
    private void toNullLocked() {
        // Out of the registry first: a client that saw JOB_STATUS_CHANGE(null) must not find
        // the job in query-block-jobs any more.
        if (onDismissed != null) {
            onDismissed.run();
        }
        transition(JobStatus.NULL);
    }

    /**
     * created → running, synchronously in the caller (QEMU job_start()); the thread follows.
     * False when the job is no longer created: its transaction aborted it before it could start
     * (a member cancelled while a transaction still committed the others), so no thread is due.
     */
    boolean markStarted() {
        lock.lock();
        try {
            if (status != JobStatus.CREATED || finishing) {
                return false;
            }
            started = true;
            transition(JobStatus.RUNNING);
            return true;
        } finally {
            lock.unlock();
        }
    }

    // ------------------------------------------------------------------ owner thread

    /** Body of the job's owner thread: entry pause point, run, then the finish sequence. */
    void runOwner() {
        Throwable fail = null;
        try {
            // QEMU job_co_entry(): a pause requested before the job ran (the drain of
            // drive-backup's start) is honoured before any work.
            context.pausePoint();
            driver.run(context);
        } catch (JobCancelledException e) {
            // the finish sequence sees forceCancel
        } catch (Throwable t) {
            fail = t;
        }
        completed(fail);
    }

    /**
     * QEMU job_completed(): success → waiting, and the transaction decides what follows
     * ({@link JobTxn#memberSucceeded}: pending, then finalize, now or on job-finalize); failure
     * or force cancel → aborting, and the transaction aborts every member ({@link JobTxn#abort}).
     */
    private void completed(Throwable fail) {
        boolean success;
        lock.lock();
        try {
            if (fail != null && failure == null) {
                failure = fail;
            }
            sleeping = 0;
            success = !forceCancel && failure == null && ignoredError == null;
            transition(success ? JobStatus.WAITING : JobStatus.ABORTING);
        } finally {
            lock.unlock();
        }
        if (success) {
            txn.memberSucceeded(this);
        } else {
            txn.abort(this, false);
        }
    }

    /**
     * The one place a job's outcome is decided, when its transaction finalizes it (after every
     * member succeeded and prepared, or when the transaction aborts): cancelled if
     * force-cancelled by then (by the user, or by its transaction because another member failed),
     * failed if run or prepare failed (or stream ignored an error), else success. Nothing after
     * this makes a job cancelled: a cancel arriving later (say while a mirror pivots) is too
     * late, as in QEMU, where job_cancel() of a job already finalizing has nothing left to cancel.
     */
    private Outcome claimFinishLocked() {
        assert lock.isHeldByCurrentThread() && outcome == null;
        finishing = true;
        if (forceCancel) {
            outcome = Outcome.CANCELLED;
        } else if (failure != null || ignoredError != null) {
            if (failure == null) {
                failure = ignoredError;
            }
            outcome = Outcome.FAILURE;
        } else {
            outcome = Outcome.SUCCESS;
        }
        return outcome;
    }

    // ------------------------------------------------------------------ steps its transaction runs

    /** True in {@code waiting}: the work is done and the job waits for its transaction. */
    boolean isWaiting() {
        lock.lock();
        try {
            return status == JobStatus.WAITING;
        } finally {
            lock.unlock();
        }
    }

    /** QEMU job_transition_to_pending(): waiting → pending, BLOCK_JOB_PENDING without auto-finalize. */
    void toPending() {
        lock.lock();
        try {
            transition(JobStatus.PENDING);
            if (!autoFinalize) {
                events.blockJobPending(driver.type(), id);
            }
        } finally {
            lock.unlock();
        }
    }

    /** The transaction finalizes its members: a cancel from now on is too late. */
    void markFinishing() {
        lock.lock();
        try {
            finishing = true;
        } finally {
            lock.unlock();
        }
    }

    /**
     * QEMU job_prepare(): the last step that may still fail. A failure fails the job (aborting)
     * and is returned as false.
     */
    boolean runPrepare() {
        try {
            driver.prepare();
            return true;
        } catch (Throwable t) {
            lock.lock();
            try {
                failure = t;
                transition(JobStatus.ABORTING);
            } finally {
                lock.unlock();
            }
            return false;
        }
    }

    /**
     * QEMU job_cancel_async(job, force=true) from the transaction's abort: another member
     * failed or was cancelled. Lifts a user pause (the job must see the cancel); a job never
     * started is completed at once (created → aborting, QEMU job_cancel() of an unstarted job).
     * Nothing once the job's outcome is claimed.
     */
    void cancelByTxn() {
        boolean ready;
        lock.lock();
        try {
            if (outcome != null) {
                return;
            }
            ready = status == JobStatus.READY || status == JobStatus.STANDBY;
        } finally {
            lock.unlock();
        }
        // the driver may wake its own waits (in-flight requests); whatever it answers, the
        // transaction's cancel is a force cancel
        driver.cancel(true, ready);
        lock.lock();
        try {
            if (outcome != null) {
                return;
            }
            cancelRequested = true;
            forceCancel = true;
            liftUserPauseLocked();
            if (!started && status == JobStatus.CREATED) {
                transition(JobStatus.ABORTING);
            }
            changed.signalAll();
        } finally {
            lock.unlock();
        }
    }

    /**
     * QEMU job_finish_sync() as the transaction's abort uses it: waits, without bound, until the
     * job's work has stopped (waiting, pending, aborting or later). A force-cancelled job gets
     * there at its next pause point.
     */
    void awaitCompleted() {
        lock.lock();
        try {
            boolean interrupted = false;
            while (!isCompletedLocked()) {
                try {
                    changed.await();
                } catch (InterruptedException e) {
                    interrupted = true; // the member must still be finalized; keep the flag
                }
            }
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        } finally {
            lock.unlock();
        }
    }

    /** QEMU job_is_completed(). */
    private boolean isCompletedLocked() {
        return switch (status) {
            case WAITING, PENDING, ABORTING, CONCLUDED, NULL -> true;
            default -> false;
        };
    }

    /**
     * The end of one member, as its transaction finalizes it: claims the outcome
     * ({@link #claimFinishLocked}), aborting unless it is a success, then
     * {@link #finalizeSingle}. Nothing when the outcome was claimed already.
     */
    void finish() {
        lock.lock();
        try {
            if (outcome != null) {
                return;
            }
            if (claimFinishLocked() != Outcome.SUCCESS) {
                transition(JobStatus.ABORTING);
            }
        } finally {
            lock.unlock();
        }
        finalizeSingle();
    }

    /**
     * QEMU job_finalize_single(): commit or abort as the outcome says, clean, the end event,
     * concluded, maybe null. commit/abort/clean cannot fail the job (QEMU's are void): whatever
     * can fail belongs in prepare; an exception here is a bug, logged.
     */
    private void finalizeSingle() {
        Outcome end;
        lock.lock();
        try {
            end = outcome;
        } finally {
            lock.unlock();
        }
        try {
            if (end == Outcome.SUCCESS) {
                driver.commit();
            } else {
                driver.abort();
            }
        } catch (Throwable t) {
            LOG.log(Level.SEVERE, "job " + id + ": " + (end == Outcome.SUCCESS ? "commit" : "abort")
                    + " threw, which it must not", t);
        }
        try {
            driver.clean();
        } catch (Throwable t) {
            LOG.log(Level.SEVERE, "job " + id + ": clean threw, which it must not", t);
        }
        lock.lock();
        try {
            if (end == Outcome.CANCELLED) {
                errorText = "Operation canceled";
            } else {
                errorText = end == Outcome.FAILURE ? errorText(failure) : null;
            }
            boolean goesNow = autoDismiss || !started;
            if (goesNow && onRelease != null) {
                // Its nodes are free before the end event goes out: QEMU emits it and dismisses
                // the job in one main-loop step, so a client that saw BLOCK_JOB_COMPLETED may
                // blockdev-del the target at once (seen refused as busy here before). The job
                // itself stays listed until after the event: a client that polls query-block-jobs
                // must not find it gone before it has seen how it ended.
                onRelease.run();
            }
            // QEMU emits the end event only for a job that started: one a transaction made and
            // rolled back shows J(created) J(aborting) J(concluded) J(null) and nothing else
            // a plain job (blockdev-create's) has no BLOCK_JOB_* events (JobType.blockJob)
            if (started && driver.type().blockJob() && end == Outcome.CANCELLED) {
                events.blockJobCancelled(driver.type(), id, len, offset, limiter.speed());
            } else if (started && driver.type().blockJob()) {
                events.blockJobCompleted(driver.type(), id, len, offset, limiter.speed(), errorText);
            }
            transition(JobStatus.CONCLUDED);
            // a job that never started is gone at once even without auto-dismiss (observed on
            // QEMU 7.2: a rolled-back transaction's job reaches null and query-jobs is empty)
            if (goesNow) {
                toNullLocked();
            }
        } finally {
            lock.unlock();
        }
    }

    /** The text of BLOCK_JOB_COMPLETED.error: strerror for I/O errors (QEMU sets it so). */
    static String errorText(Throwable t) {
        if (t instanceof IoError io) {
            return io.errno().strerror();
        }
        if (t instanceof java.io.IOException) {
            return IoError.wrap((java.io.IOException) t).errno().strerror();
        }
        return t.getMessage() != null ? t.getMessage() : t.toString();
    }

    // ------------------------------------------------------------------ verbs (QMP threads)

    /**
     * job-pause / block-job-pause (QEMU job_user_pause()). Waits (bounded) for the job to reach
     * a pause point, so that JOB_STATUS_CHANGE(paused) precedes the reply as reference/jobs.md §5
     * records (QEMU 7.2 itself sends the two in either order; clients must not rely on it).
     */
    public void userPause() throws QmpError {
        lock.lock();
        try {
            Transitions.checkVerb(id, status, JobVerb.PAUSE);
            if (userPaused) {
                throw QmpError.generic("Job is already paused");
            }
            userPaused = true;
            pauseCount++;
            changed.signalAll();
            awaitLocked(() -> quiescedLocked() || !isLive(status));
        } finally {
            lock.unlock();
        }
    }

    /** Waits (bounded) until the job is paused (quiesced) or no longer running; for tests and drains. */
    public boolean awaitPaused(long timeout, TimeUnit unit) {
        return await(() -> quiescedLocked() || !isLive(status), unit.toNanos(timeout));
    }

    /**
     * Paused for real: a job thread waits at a pause point and no request of the job is in
     * flight, so nothing reaches its nodes until resume (query-block-jobs' {@code paused}).
     */
    private boolean quiescedLocked() {
        return atPausePoint > 0 && inFlight == 0;
    }

    /**
     * Reports a requested pause once it is real (QEMU's J(paused), or standby when ready): called
     * wherever the job may just have become quiesced, so that whoever sees it quiesced also sees
     * the status. Caller holds the lock.
     */
    private void settlePauseLocked() {
        if (pauseCount > 0 && quiescedLocked() && status != JobStatus.PAUSED && status != JobStatus.STANDBY) {
            statusBeforePause = status;
            transition(status == JobStatus.READY ? JobStatus.STANDBY : JobStatus.PAUSED);
        }
    }

    /**
     * job-resume / block-job-resume: also resets io-status to ok (block_job_user_resume()).
     * Waits (bounded) for the job to leave its pause point: QEMU 7.2 emits
     * JOB_STATUS_CHANGE(running) before the reply.
     */
    public void userResume() throws QmpError {
        lock.lock();
        try {
            if (!userPaused) {
                throw QmpError.generic("Can't resume a job that was not paused");
            }
            Transitions.checkVerb(id, status, JobVerb.RESUME);
            ioStatus = IoStatus.OK;
            userPaused = false;
            pauseCount--;
            changed.signalAll();
            awaitLocked(() -> pauseCount > 0 || (status != JobStatus.PAUSED && status != JobStatus.STANDBY));
        } finally {
            lock.unlock();
        }
    }

    /** True when the user (or a {@code stop} error action) paused the job. */
    public boolean userPaused() {
        lock.lock();
        try {
            return userPaused;
        } finally {
            lock.unlock();
        }
    }

    /** block-job-set-speed (block_job_set_speed()). */
    public void setSpeed(long speed) throws QmpError {
        lock.lock();
        try {
            Transitions.checkVerb(id, status, JobVerb.SET_SPEED);
            if (speed < 0) {
                throw QmpError.generic("Parameter 'speed' expects a non-negative value");
            }
            limiter.setSpeed(speed, System.nanoTime());
            changed.signalAll();
        } finally {
            lock.unlock();
        }
    }

    /**
     * job-cancel / block-job-cancel after the verb check (QEMU job_user_cancel() +
     * job_cancel()). A force cancel (see {@link JobDriver#cancel}) wakes the job out of any
     * pause; the call waits a bounded time for the job to conclude, because QEMU 7.2's backup
     * emits its end events before the cancel's reply (reference/jobs.md §5).
     */
    public void userCancel(boolean force) throws QmpError {
        lock.lock();
        try {
            Transitions.checkVerb(id, status, JobVerb.CANCEL);
        } finally {
            lock.unlock();
        }
        cancel(force, true);
    }

    /**
     * Cancel without the verb check (shutdown). Returns after the job ended or a bounded wait.
     * Once the finish sequence is under way the outcome is decided and the cancel does nothing.
     * <p>
     * QEMU job_cancel(): a job still working is flagged and stops at its next pause point (its
     * thread then aborts the transaction); one never started is completed at once (the rollback
     * of a transaction: {@code J(aborting)}, and no end event since it never ran); one whose work
     * is done ({@code waiting}, {@code pending}) is only cancelled by force, and then its
     * transaction aborts right here, in the caller.
     */
    void cancel(boolean force, boolean wait) {
        boolean ready;
        lock.lock();
        try {
            if (finishing || (!isLive(status) && status != JobStatus.WAITING && status != JobStatus.PENDING)) {
                return;
            }
            ready = status == JobStatus.READY || status == JobStatus.STANDBY;
        } finally {
            lock.unlock();
        }
        boolean isForce = driver.cancel(force, ready);
        boolean done;
        boolean unstarted = false;
        lock.lock();
        try {
            if (finishing) {
                return; // its transaction began to finalize it meanwhile: too late
            }
            done = status == JobStatus.WAITING || status == JobStatus.PENDING;
            if (done && !isForce) {
                return; // a soft cancel of a job whose work is done is ignored (job_cancel_async)
            }
            if (!done) {
                cancelRequested = true;
                if (isForce) {
                    forceCancel = true;
                }
                // job_cancel_async(): a user pause is lifted (and io-status reset, as a resume
                // does) so the job can see the cancel.
                liftUserPauseLocked();
                if (!started && status == JobStatus.CREATED) {
                    forceCancel = true;
                    transition(JobStatus.ABORTING);
                    unstarted = true;
                }
                changed.signalAll();
            }
        } finally {
            lock.unlock();
        }
        if (done) {
            txn.abort(this, true);
            return;
        }
        if (unstarted) {
            txn.abort(this, false);
            return;
        }
        if (wait && isForce) {
            // the whole job transaction: QEMU 7.2 replies to block-job-cancel of a grouped
            // backup after every member's end events (transactions.md §6.2, observed)
            long deadline = System.nanoTime() + COMMAND_WAIT_NANOS;
            for (Job m : txn.members()) {
                m.awaitEnd(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
            }
        }
    }

    private void liftUserPauseLocked() {
        if (userPaused) {
            userPaused = false;
            pauseCount--;
            ioStatus = IoStatus.OK;
        }
    }

    /** job-complete / block-job-complete (QEMU job_complete()). */
    public void complete() throws QmpError {
        lock.lock();
        try {
            Transitions.checkVerb(id, status, JobVerb.COMPLETE);
            if (cancelRequested || !driver.canComplete()) {
                throw QmpError.generic("The active block job '" + id + "' cannot be completed");
            }
        } finally {
            lock.unlock();
        }
        driver.complete();
        lock.lock();
        try {
            changed.signalAll();
        } finally {
            lock.unlock();
        }
    }

    /**
     * job-finalize / block-job-finalize: runs the finish sequence now, in the caller, for every
     * member of the job's transaction (QEMU job_finalize(): the verb is checked on this job only).
     */
    public void finalizeJob() throws QmpError {
        lock.lock();
        try {
            Transitions.checkVerb(id, status, JobVerb.FINALIZE);
            if (finishing) {
                return;
            }
        } finally {
            lock.unlock();
        }
        txn.finalizeRequested();
    }

    /** job-dismiss / block-job-dismiss: concluded → null. */
    public void dismiss() throws QmpError {
        lock.lock();
        try {
            Transitions.checkVerb(id, status, JobVerb.DISMISS);
            toNullLocked();
        } finally {
            lock.unlock();
        }
    }

    /** Shutdown: a job left concluded still emits null (reference/jobs.md §4). */
    void dismissAtShutdown() {
        lock.lock();
        try {
            if (status == JobStatus.CONCLUDED) {
                toNullLocked();
            }
        } finally {
            lock.unlock();
        }
    }

    /**
     * An internal pause (QEMU's drain): counts like a user pause but is not one. Returns once
     * the job is at a pause point (or no longer running), bounded.
     */
    public void drainBegin() {
        lock.lock();
        try {
            pauseCount++;
            changed.signalAll();
            if (started) {
                awaitLocked(() -> quiescedLocked() || !isLive(status));
            }
        } finally {
            lock.unlock();
        }
    }

    /** Ends an internal pause; waits (bounded) until the job left its pause point. */
    public void drainEnd() {
        lock.lock();
        try {
            pauseCount--;
            changed.signalAll();
            if (started) {
                awaitLocked(() -> pauseCount > 0 || (status != JobStatus.PAUSED && status != JobStatus.STANDBY));
            }
        } finally {
            lock.unlock();
        }
    }

    /** Waits until the job is concluded or gone; false on timeout. */
    public boolean awaitEnd(long timeout, TimeUnit unit) {
        return await(() -> status == JobStatus.CONCLUDED || status == JobStatus.NULL, unit.toNanos(timeout));
    }

    /** Waits until {@code status} is reached (or passed to concluded/null); false on timeout. */
    public boolean awaitStatus(JobStatus wanted, long timeout, TimeUnit unit) {
        // a job gone (null) will never reach it: stop waiting then
        return await(() -> status == wanted || status == JobStatus.NULL, unit.toNanos(timeout))
                && status == wanted;
    }

    /** Takes the lock and waits (bounded) for {@code cond}; true when it holds. */
    private boolean await(Cond cond, long nanos) {
        lock.lock();
        try {
            return awaitLocked(cond, nanos);
        } finally {
            lock.unlock();
        }
    }

    private static boolean isLive(JobStatus s) {
        return s == JobStatus.CREATED || s == JobStatus.RUNNING || s == JobStatus.PAUSED
                || s == JobStatus.READY || s == JobStatus.STANDBY;
    }

    private interface Cond {
        boolean met();
    }

    /** Bounded wait on {@link #changed} for a command's visible effect. Caller holds the lock. */
    private void awaitLocked(Cond cond) {
        awaitLocked(cond, COMMAND_WAIT_NANOS);
    }

    /**
     * The one timed wait on {@link #changed}: until {@code cond} holds or {@code nanos} pass (an
     * interrupt ends it too, flag kept). Caller holds the lock. Returns whether {@code cond} holds.
     */
    private boolean awaitLocked(Cond cond, long nanos) {
        long deadline = System.nanoTime() + nanos;
        try {
            while (!cond.met()) {
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    return false;
                }
                changed.awaitNanos(left);
            }
            return true;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return cond.met();
        }
    }

    @Override
    public String toString() {
        return "Job[" + id + " " + driver.type().wire() + "]";
    }

    // ------------------------------------------------------------------ driver context

    /** The {@link JobContext} of this job; all its state is the job's, under the job's lock. */
    private final class Context implements JobContext {

        @Override
        public String id() {
            return id;
        }

        @Override
        public void pausePoint() throws JobCancelledException {
            lock.lock();
            try {
                pausePointLocked();
            } finally {
                lock.unlock();
            }
        }

        /**
         * Waits while a pause is requested. The job turns paused (standby when ready) only once
         * its requests in flight are done; none starts while it is paused
         * ({@link #beginInFlight} passes here first).
         */
        private void pausePointLocked() throws JobCancelledException {
            if (forceCancel) {
                throw new JobCancelledException();
            }
            if (pauseCount == 0) {
                return;
            }
            atPausePoint++;
            settlePauseLocked();
            changed.signalAll();
            try {
                while (pauseCount > 0 && !forceCancel) {
                    changed.awaitUninterruptibly();
                }
            } finally {
                atPausePoint--;
                if (atPausePoint == 0 && (status == JobStatus.PAUSED || status == JobStatus.STANDBY)) {
                    transition(statusBeforePause == JobStatus.READY ? JobStatus.READY : JobStatus.RUNNING);
                }
                changed.signalAll();
            }
            if (forceCancel) {
                throw new JobCancelledException();
            }
        }

        @Override
        public InFlight beginInFlight() throws JobCancelledException {
            lock.lock();
            try {
                pausePointLocked();
                inFlight++;
            } finally {
                lock.unlock();
            }
            java.util.concurrent.atomic.AtomicBoolean open = new java.util.concurrent.atomic.AtomicBoolean(true);
            return () -> {
                if (open.getAndSet(false)) {
                    lock.lock();
                    try {
                        inFlight--;
                        settlePauseLocked(); // the last one a pause was waiting for
                        changed.signalAll();
                    } finally {
                        lock.unlock();
                    }
                }
            };
        }

        @Override
        public boolean cancelRequested() {
            lock.lock();
            try {
                return cancelRequested;
            } finally {
                lock.unlock();
            }
        }

        @Override
        public boolean isCancelled() {
            lock.lock();
            try {
                return forceCancel;
            } finally {
                lock.unlock();
            }
        }

        @Override
        public void rateLimit(long bytes) throws JobCancelledException {
            lock.lock();
            try {
                while (true) {
                    pausePointLocked();
                    long now = System.nanoTime();
                    long delay = limiter.delayNanos(now);
                    if (delay == 0) {
                        limiter.charge(bytes, now);
                        return;
                    }
                    // Woken early by set-speed, pause or cancel: the loop re-reads all three.
                    sleepLocked(delay);
                }
            } finally {
                lock.unlock();
            }
        }

        @Override
        public void sleep(long nanos) throws JobCancelledException {
            long deadline = System.nanoTime() + nanos;
            lock.lock();
            try {
                while (true) {
                    pausePointLocked();
                    long left = deadline - System.nanoTime();
                    if (left <= 0) {
                        return;
                    }
                    sleepLocked(left);
                }
            } finally {
                lock.unlock();
            }
        }

        /**
         * Waits up to {@code nanos} with the lock held (released while waiting), counted as
         * sleeping for query-block-jobs' {@code busy}; a state change wakes it early, an
         * interrupt ends the job as cancelled.
         */
        private void sleepLocked(long nanos) throws JobCancelledException {
            sleeping++;
            try {
                changed.awaitNanos(nanos);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new JobCancelledException();
            } finally {
                sleeping--;
            }
        }

        @Override
        public void setLen(long newLen) {
            lock.lock();
            try {
                len = newLen;
            } finally {
                lock.unlock();
            }
        }

        @Override
        public void addLen(long delta) {
            lock.lock();
            try {
                len += delta;
            } finally {
                lock.unlock();
            }
        }

        @Override
        public void addOffset(long delta) {
            lock.lock();
            try {
                offset += delta;
                if (delta > 0) {
                    failedSinceProgress.clear();
                    ignoreStreak = 0;
                }
            } finally {
                lock.unlock();
            }
        }

        @Override
        public void setOffset(long newOffset) {
            lock.lock();
            try {
                if (newOffset > offset) {
                    failedSinceProgress.clear();
                    ignoreStreak = 0;
                }
                offset = newOffset;
            } finally {
                lock.unlock();
            }
        }

        @Override
        public long len() {
            lock.lock();
            try {
                return len;
            } finally {
                lock.unlock();
            }
        }

        @Override
        public long offset() {
            lock.lock();
            try {
                return offset;
            } finally {
                lock.unlock();
            }
        }

        @Override
        public long speed() {
            lock.lock();
            try {
                return limiter.speed();
            } finally {
                lock.unlock();
            }
        }

        @Override
        public void ready() {
            lock.lock();
            try {
                transition(JobStatus.READY);
                events.blockJobReady(driver.type(), id, len, offset, limiter.speed());
            } finally {
                lock.unlock();
            }
        }

        @Override
        public boolean isReady() {
            lock.lock();
            try {
                return status == JobStatus.READY || status == JobStatus.STANDBY;
            } finally {
                lock.unlock();
            }
        }

        @Override
        public ErrorAction handleError(BlockdevOnError policy, IoOperation op, IoError e, long at)
                throws IoError, JobCancelledException {
            ErrorAction action = ErrorPolicy.resolve(policy, e.errno());
            long backoff = applyPolicy(action, op, e, at);
            switch (action) {
                case REPORT -> throw e;
                case IGNORE -> {
                    if (backoff > 0) {
                        sleep(backoff);
                    }
                }
                case STOP -> pausePoint();
            }
            return action;
        }

        @Override
        public ErrorAction noteError(BlockdevOnError policy, IoOperation op, IoError e) {
            ErrorAction action = ErrorPolicy.resolve(policy, e.errno());
            applyPolicy(action, op, e, -1);
            return action;
        }

        /**
         * The part of an error policy that does not wait: BLOCK_JOB_ERROR, and for stop the
         * user-visible pause with its io-status. Returns the back-off an ignored error is to wait.
         */
        private long applyPolicy(ErrorAction action, IoOperation op, IoError e, long at) {
            long backoff = 0;
            lock.lock();
            try {
                if (action == ErrorAction.STOP) {
                    // block_job_error_action(): the pause is made user-visible so that
                    // block-job-resume lifts it; io-status says why.
                    if (!userPaused) {
                        userPaused = true;
                        pauseCount++;
                    }
                    ioStatus = ErrorPolicy.ioStatusFor(e.errno());
                } else if (action == ErrorAction.IGNORE) {
                    boolean repeat = at < 0 || !failedSinceProgress.add(at);
                    if (failedSinceProgress.size() > 65536) {
                        failedSinceProgress.clear();
                    }
                    if (repeat) {
                        ignoreStreak++;
                        backoff = Math.min(BACKOFF_MAX_NANOS,
                                BACKOFF_MIN_NANOS << Math.min(20, ignoreStreak - 1));
                    }
                }
                events.blockJobError(id, op, action);
                changed.signalAll();
            } finally {
                lock.unlock();
            }
            return backoff;
        }

        @Override
        public void recordIgnoredError(IoError e) {
            lock.lock();
            try {
                if (ignoredError == null) {
                    ignoredError = e;
                }
            } finally {
                lock.unlock();
            }
        }
    }
}
