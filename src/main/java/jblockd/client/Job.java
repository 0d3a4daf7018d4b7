package jblockd.client;

import com.fasterxml.jackson.databind.JsonNode;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.function.Consumer;
import jblockd.qapi.IoStatus;
import jblockd.qapi.JobStatus;
import jblockd.qapi.JobType;

/**
 * A handle on one block job of the daemon, returned by the job-starting commands of
 * {@link JobCommands} (or {@link JobCommands#attach}). It follows the job's events (it was
 * subscribed before the command was sent, since events may precede the reply, jobs.md §4) and
 * polls {@code query-block-jobs} every {@link #pollInterval} for offset, rate and io-status.
 *
 * <p>Progress listeners run on the client's event thread, in order; the last call has
 * {@link JobProgress#finished()} true and happens before {@link #awaitCompletion} returns.
 * Thread-safe.
 */
public final class Job {
    private static final Duration DEFAULT_POLL = Duration.ofMillis(500);

    private final QmpClient qmp;
    private final String id;
    private final Object lock = new Object();
    private final RateEstimator rate = new RateEstimator();
    private final CompletableFuture<JobResult> result = new CompletableFuture<>();
    private final List<Consumer<JobProgress>> listeners = new CopyOnWriteArrayList<>();
    private volatile Duration pollInterval = DEFAULT_POLL;
    private volatile Consumer<QmpEvent> subscription;
    private final Runnable closeHook = () -> dispatchFailure();

    // state, guarded by lock
    private JobType type;
    private JobStatus status = JobStatus.CREATED;
    private long offset;
    private long len;
    private long speed;
    private IoStatus ioStatus = IoStatus.OK;
    private boolean paused;
    private boolean ready;
    private String lastError;
    private boolean awaitingFinalize;
    private JobResult outcome;
    private boolean seenInQuery;

    Job(QmpClient qmp, String id, JobType type) {
        this.qmp = qmp;
        this.id = id;
        this.type = type;
    }

    /** Starts following; {@code subscription} is the inline listener feeding {@link #onEvent}. */
    void start(Consumer<QmpEvent> subscription) {
        this.subscription = subscription;
        qmp.connection().onClose(closeHook);
        Thread.ofVirtual().name("job-poll " + id).start(this::pollLoop);
    }

    private void dispatchFailure() {
        qmp.connection().dispatch(() -> result.completeExceptionally(new QmpConnectionException(
                "QMP connection closed while following job '" + id + "': " + qmp.connection().closeReason())));
    }

    /** Attached to a job already in {@code pending}: it can only be waiting for finalize. */
    void assumePending(boolean pending) {
        synchronized (lock) {
            awaitingFinalize = pending;
            if (pending) {
                status = JobStatus.PENDING;
            }
        }
    }

    public String id() {
        return id;
    }

    /** The job type, null until known (from the command, an event or a query). */
    public JobType type() {
        synchronized (lock) {
            return type;
        }
    }

    /** The last status seen. */
    public JobStatus status() {
        synchronized (lock) {
            return status;
        }
    }

    /** Sets how often {@code query-block-jobs} is polled (default 500 ms). */
    public Job pollInterval(Duration interval) {
        this.pollInterval = interval;
        return this;
    }

    /** Adds a progress listener; it is called at once with the current state, then on every change. */
    public Job onProgress(Consumer<JobProgress> listener) {
        listeners.add(listener);
        qmp.connection().dispatch(() -> listener.accept(progress()));
        return this;
    }

    /** The current progress snapshot. */
    public JobProgress progress() {
        synchronized (lock) {
            return snapshot();
        }
    }

    /** Completes with the result once the job has ended (exceptionally if the connection ends first). */
    public CompletableFuture<JobResult> completion() {
        return result.copy();
    }

    /** Waits for the job to end. */
    public JobResult awaitCompletion() throws InterruptedException {
        try {
            return result.get();
        } catch (ExecutionException e) {
            throw unwrap(e);
        }
    }

    /** Waits for the job to end, at most {@code timeout}. */
    public JobResult awaitCompletion(Duration timeout) throws InterruptedException, TimeoutException {
        try {
            return result.get(timeout.toNanos(), TimeUnit.NANOSECONDS);
        } catch (ExecutionException e) {
            throw unwrap(e);
        }
    }

    // ------------------------------------------------------------ verbs (block-job-* commands)

    public void pause() {
        qmp.jobs().blockJobPause(id);
    }

    public void resume() {
        qmp.jobs().blockJobResume(id);
    }

    public void cancel() {
        qmp.jobs().blockJobCancel(id, false);
    }

    /** {@code block-job-cancel} with {@code force}: also cancels a paused job / a READY mirror without pivot. */
    public void cancel(boolean force) {
        qmp.jobs().blockJobCancel(id, force);
    }

    public void complete() {
        qmp.jobs().blockJobComplete(id);
    }

    public void setSpeed(long bytesPerSecond) {
        qmp.jobs().blockJobSetSpeed(id, bytesPerSecond);
    }

    public void finalizeJob() {
        qmp.jobs().blockJobFinalize(id);
    }

    public void dismiss() {
        qmp.jobs().blockJobDismiss(id);
    }

    // ------------------------------------------------------------ feeding

    /** Applies one event about this job. Runs on the reader thread: never blocks. */
    void onEvent(QmpEvent ev) {
        JobResult finished = null;
        synchronized (lock) {
            if (outcome != null) {
                return;
            }
            switch (ev.name()) {
                case QmpEvent.JOB_STATUS_CHANGE -> ev.asJobStatusChange().ifPresent(c -> setStatus(c.status()));
                case QmpEvent.BLOCK_JOB_ERROR -> ev.asBlockJobError().ifPresent(e -> {
                    lastError = wire(e.operation()) + " error, action " + wire(e.action());
                    if (e.action() == jblockd.qapi.ErrorAction.STOP && ioStatus == IoStatus.OK) {
                        ioStatus = IoStatus.FAILED; // the next query tells failed from nospace
                    }
                });
                case QmpEvent.BLOCK_JOB_PENDING -> awaitingFinalize = true;
                case QmpEvent.BLOCK_JOB_READY -> ev.asBlockJobEvent().ifPresent(r -> {
                    ready = true;
                    absorb(r);
                });
                case QmpEvent.BLOCK_JOB_COMPLETED, QmpEvent.BLOCK_JOB_CANCELLED -> {
                    QmpEvent.BlockJobEvent r = ev.asBlockJobEvent().orElseThrow();
                    absorb(r);
                    JobResult.Outcome o = ev.name().equals(QmpEvent.BLOCK_JOB_CANCELLED)
                            ? JobResult.Outcome.CANCELLED
                            : r.error() == null ? JobResult.Outcome.COMPLETED : JobResult.Outcome.FAILED;
                    finished = new JobResult(id, type, o, r.offset(), r.len(), r.error());
                }
                default -> { }
            }
            if (finished == null && status == JobStatus.NULL) {
                // gone without COMPLETED/CANCELLED: only when we attached too late to see them
                finished = new JobResult(id, type, JobResult.Outcome.FAILED, offset, len,
                        "job ended without a completion event");
            }
        }
        if (finished != null) {
            finish(finished);
        } else {
            publish();
        }
    }

    private void setStatus(JobStatus s) {
        if (s == null) {
            return;
        }
        status = s;
        awaitingFinalize &= s == JobStatus.PENDING;
        paused = s == JobStatus.PAUSED || s == JobStatus.STANDBY;
        ready = s == JobStatus.READY || s == JobStatus.STANDBY;
        if (s == JobStatus.RUNNING || s == JobStatus.READY) {
            ioStatus = IoStatus.OK; // resume clears the io-status (seed 000)
        }
        if ((s == JobStatus.WAITING || s == JobStatus.PENDING || s == JobStatus.READY) && offset < len) {
            // Only a job whose run succeeded reaches waiting/pending (failures go through
            // aborting), and a mirror is READY only once everything was copied: its work is
            // done, so do not keep showing the last polled offset until the event with the
            // figures arrives (BLOCK_JOB_READY follows JOB_STATUS_CHANGE; it replaces these).
            offset = len;
        }
    }

    private void absorb(QmpEvent.BlockJobEvent r) {
        if (r.type() != null) {
            type = r.type();
        }
        offset = r.offset();
        len = r.len();
        speed = r.speed();
    }

    /**
     * One query-block-jobs round. The reply is applied on the reader thread, in order with the
     * events: a reply generated before {@code J(pending)} cannot overwrite the status after it.
     */
    private void poll() throws InterruptedException {
        CompletableFuture<JsonNode> f = qmp.connection().send("query-block-jobs", null, this::applyPoll);
        try {
            f.get();
        } catch (ExecutionException e) {
            if (e.getCause() instanceof QmpConnectionException c) {
                throw c;
            }
        }
    }

    private void applyPoll(JsonNode reply) {
        JsonNode list = reply.get("return");
        if (list == null || !list.isArray()) {
            return; // an error reply: the next round retries
        }
        BlockJobInfo info = null;
        for (JsonNode n : list) {
            if (n.path("device").asText().equals(id)) {
                info = BlockJobInfo.from(n);
            }
        }
        JobResult finished = null;
        synchronized (lock) {
            if (outcome != null) {
                return;
            }
            if (info == null) {
                // Events are applied before later replies, so a job missing here has ended
                // without us seeing its end (attached too late).
                if (seenInQuery || status != JobStatus.CREATED) {
                    finished = new JobResult(id, type, JobResult.Outcome.FAILED, offset, len,
                            "job disappeared without a completion event");
                }
            } else {
                seenInQuery = true;
                if (info.type() != null) {
                    type = info.type();
                }
                offset = info.offset();
                len = info.len();
                speed = info.speed();
                ioStatus = info.ioStatus() == null ? IoStatus.OK : info.ioStatus();
                setStatus(info.status());
                // pending without auto-finalize can only be waiting for finalize, whatever
                // events this client saw (it may have attached after BLOCK_JOB_PENDING)
                awaitingFinalize |= info.status() == JobStatus.PENDING && !info.autoFinalize();
                paused = info.paused();
                ready = info.ready();
                rate.sample(System.nanoTime(), offset);
                if (info.status() == JobStatus.CONCLUDED) {
                    // concluded and kept (auto-dismiss=false) before we subscribed
                    JobResult.Outcome o = info.error() == null ? JobResult.Outcome.COMPLETED
                            : info.error().equals("Operation canceled") ? JobResult.Outcome.CANCELLED
                            : JobResult.Outcome.FAILED;
                    finished = new JobResult(id, type, o, offset, len, info.error());
                }
            }
        }
        if (finished != null) {
            finish(finished);
        } else {
            publish();
        }
    }

    private void pollLoop() {
        while (!result.isDone() && qmp.isOpen()) {
            try {
                poll();
            } catch (QmpConnectionException e) {
                return;
            } catch (InterruptedException e) {
                return;
            }
            try {
                result.get(pollInterval.toNanos(), TimeUnit.NANOSECONDS);
            } catch (TimeoutException e) {
                // next round
            } catch (InterruptedException e) {
                return;
            } catch (ExecutionException e) {
                return;
            }
        }
    }

    private void finish(JobResult r) {
        synchronized (lock) {
            if (outcome != null) {
                return;
            }
            outcome = r;
            if (status != JobStatus.NULL) {
                status = JobStatus.CONCLUDED;
            }
            paused = false;
        }
        Consumer<QmpEvent> sub = subscription;
        if (sub != null) {
            qmp.connection().removeInlineListener(sub);
        }
        qmp.connection().removeCloseHook(closeHook);
        JobProgress last = progress();
        qmp.connection().dispatch(() -> {
            for (Consumer<JobProgress> l : listeners) {
                l.accept(last);
            }
            result.complete(r);
        });
    }

    private void publish() {
        if (listeners.isEmpty()) {
            return;
        }
        JobProgress p = progress();
        qmp.connection().dispatch(() -> {
            for (Consumer<JobProgress> l : listeners) {
                l.accept(p);
            }
        });
    }

    private JobProgress snapshot() {
        boolean done = outcome != null;
        double pct = len > 0 ? Math.min(100.0, 100.0 * offset / len)
                : done && outcome.succeeded() ? 100.0 : 0.0;
        double r = done ? 0 : rate.rate();
        Duration eta = null;
        if (!done && !paused && r > 1 && len >= offset) {
            eta = Duration.ofMillis((long) ((len - offset) / r * 1000));
        }
        return new JobProgress(id, type, status, offset, len, pct, r, eta, ioStatus, paused, ready, speed,
                done && outcome.error() != null ? outcome.error() : lastError, awaitingFinalize && !done, done);
    }

    private static String wire(jblockd.qapi.WireEnum e) {
        return e == null ? "?" : e.wire();
    }

    private RuntimeException unwrap(ExecutionException e) {
        return e.getCause() instanceof RuntimeException re ? re
                : new QmpConnectionException("following job '" + id + "' failed", e.getCause());
    }
}
