package jblockd.cli;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;
import jblockd.client.Job;
import jblockd.client.JobProgress;
import jblockd.client.JobResult;
import jblockd.client.QmpConnectionException;
import jblockd.client.QmpException;

/** Follows jobs to their end (or to READY) on a {@link ProgressView}; gives the exit code. */
final class JobWaiter {

    /** What to do when a mirror or active commit reports READY. */
    enum OnReady {
        /** Stop waiting: the job stays in sync in the daemon (exit 0). */
        RETURN,
        /** Send complete (pivot) and wait for the end. */
        COMPLETE,
        /** Keep waiting until someone else completes or cancels it. */
        WAIT,
        /** The caller's own progress listener finishes the job at READY; keep following to the end. */
        CALLER_FINISHES
    }

    private JobWaiter() {
    }

    /**
     * Waits for every job. Exit code 0 when all completed (or reached READY with
     * {@link OnReady#RETURN}, or were cancelled and {@code cancelledIsSuccess}), 1 when any
     * failed or was cancelled; a lost connection throws.
     */
    static int await(List<Job> jobs, ProgressView view, OnReady onReady, boolean cancelledIsSuccess)
            throws InterruptedException {
        List<CompletableFuture<Integer>> done = new ArrayList<>();
        for (Job job : jobs) {
            done.add(follow(job, view, onReady, cancelledIsSuccess));
        }
        int rc = 0;
        for (CompletableFuture<Integer> f : done) {
            try {
                rc = Math.max(rc, f.get());
            } catch (ExecutionException e) {
                if (e.getCause() instanceof RuntimeException re) {
                    throw re;
                }
                throw new QmpConnectionException("waiting for jobs failed", e.getCause());
            }
        }
        return rc;
    }

    private static CompletableFuture<Integer> follow(Job job, ProgressView view, OnReady onReady,
                                                     boolean cancelledIsSuccess) {
        CompletableFuture<Integer> exit = new CompletableFuture<>();
        AtomicReference<JobProgress> last = new AtomicReference<>();
        AtomicBoolean readySeen = new AtomicBoolean();
        job.onProgress(p -> {
            last.set(p);
            if (p.finished() || exit.isDone()) {
                return;
            }
            view.update(p);
            if (p.awaitingFinalize()) {
                view.note(job.id(), "pending: 'jblockctl finalize " + job.id() + "' finishes it");
                exit.complete(0);
                return;
            }
            if (p.ready() && readySeen.compareAndSet(false, true)) {
                switch (onReady) {
                    case RETURN -> {
                        view.note(job.id(), "ready: source and target are in sync; 'jblockctl complete "
                                + job.id() + "' pivots, 'jblockctl cancel " + job.id() + "' stops");
                        exit.complete(0);
                    }
                    case COMPLETE -> {
                        view.note(job.id(), "ready: completing");
                        try {
                            job.complete();
                        } catch (QmpException e) {
                            exit.completeExceptionally(e);
                        }
                    }
                    case WAIT -> view.note(job.id(), "ready: waiting for complete or cancel");
                    case CALLER_FINISHES -> view.note(job.id(), "ready: source and target are in sync");
                }
            }
        });
        job.completion().whenComplete((r, err) -> {
            if (err != null) {
                exit.completeExceptionally(err);
                return;
            }
            if (exit.isDone()) {
                return;
            }
            JobProgress p = last.get() != null ? last.get() : job.progress();
            view.finish(p, r);
            boolean ok = r.outcome() == JobResult.Outcome.COMPLETED
                    || (cancelledIsSuccess && r.outcome() == JobResult.Outcome.CANCELLED);
            exit.complete(ok ? 0 : 1);
        });
        return exit;
    }
}
