package jblockd.job;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.locks.ReentrantLock;

/**
 * A job transaction (QEMU job.c {@code JobTxn}): the jobs whose ends are decided together. Every
 * job belongs to one; a job made alone gets a transaction of its own (QEMU's
 * {@code job_txn_new()} when none is given), so one set of rules ends every job. A
 * {@code transaction} with {@code completion-mode: grouped} puts all its backup jobs into one
 * (reference/transactions.md §6.2):
 * <ul>
 *   <li>a member that finishes its work parks in {@code waiting} until every member has; then
 *       all move to {@code pending} together, and once none of them waits for a manual
 *       {@code job-finalize} (or one of them gets it) all are prepared and then committed;</li>
 *   <li>a member that fails or is cancelled aborts them all: the others are cancelled (by
 *       force) and every member is finalized, the failing one with {@code BLOCK_JOB_COMPLETED}
 *       and its error, the others with {@code BLOCK_JOB_CANCELLED}; cancelling any member
 *       cancels all.</li>
 * </ul>
 * Members are kept newest first, as QEMU inserts them at the head of the transaction's list:
 * that is the order in which they move to pending and are finalized (observed on QEMU 7.2: jobs
 * jA then jB give {@code J(pending jB) J(pending jA)}, and jB's end events before jA's).
 *
 * <h2>Where the outcome is decided</h2>
 * The transaction decides when its members end (the three entry points below); each member's own
 * outcome is still decided in one place, {@code Job.claimFinishLocked}, from that member's flags
 * at the moment the transaction finalizes it. A member the transaction cancels is marked
 * force-cancelled first, so it ends cancelled; the member that failed keeps its failure.
 * Bitmaps (not yet in jblockd) follow from the same point: a grouped backup aborted by its
 * transaction runs its driver's {@code abort}, where its bitmap is to be handled by its
 * bitmap-mode exactly as for a failure of its own (QEMU backup_abort → backup_cleanup_sync_bitmap).
 *
 * <h2>Threads</h2>
 * Called by members' owner threads and by QMP threads (cancel, finalize). The lock guards the
 * state and the member list only; nothing waits for a member while holding it. Lock order:
 * transaction, then job (a job never calls in here holding its own lock), then registry.
 * <p>
 * The abort walks the members in order and cancels each one only when it comes to it, then waits
 * for it to stop: QEMU cancels all first but, being single-threaded, lets each run only when it
 * waits for it, so its event order is this one (a user-paused member resumes, {@code J(running)},
 * only after the members before it ended). The waits are unbounded, as QEMU's
 * {@code job_finish_sync}: a force-cancelled job stops at its next pause point.
 */
public final class JobTxn {
    private enum State {
        /** Members still working or waiting for the others. */
        OPEN,
        /** All members succeeded and are being finalized: no cancel changes anything now. */
        FINALIZING,
        /** A member failed or was cancelled: every member ends cancelled (or failed). */
        ABORTING
    }

    private final ReentrantLock lock = new ReentrantLock();
    private final List<Job> members = new ArrayList<>();
    private State state = State.OPEN;

    /** An empty transaction; jobs join it when {@link JobRegistry#create} makes them. */
    public JobTxn() {
    }

    /** job_txn_add_job(): newest first. */
    void add(Job job) {
        lock.lock();
        try {
            members.addFirst(job);
        } finally {
            lock.unlock();
        }
    }

    /** A job whose creation failed (created → null) never was a member. */
    void remove(Job job) {
        lock.lock();
        try {
            members.removeIf(j -> j == job);
        } finally {
            lock.unlock();
        }
    }

    /** The members, newest first (for tests and queries). */
    public List<Job> members() {
        lock.lock();
        try {
            return List.copyOf(members);
        } finally {
            lock.unlock();
        }
    }

    /**
     * QEMU job_completed_txn_success(): {@code job} finished its work and is {@code waiting}.
     * If every member is waiting now, all move to pending; if none of them needs a manual
     * finalize, all are finalized here, on the caller's thread (the last member to finish).
     */
    void memberSucceeded(Job job) {
        List<Job> all;
        lock.lock();
        try {
            if (state != State.OPEN) {
                return; // an abort or a finalize already owns every member
            }
            for (Job m : members) {
                // a member still working, or one that failed (it is aborting us all)
                if (!m.isWaiting()) {
                    return;
                }
            }
            boolean manual = false;
            for (Job m : members) {
                m.toPending();
                manual |= !m.autoFinalize();
            }
            if (manual) {
                return; // job-finalize of any member finalizes them all (QEMU job_finalize)
            }
            all = beginFinalizeLocked();
        } finally {
            lock.unlock();
        }
        finalizeAll(all);
    }

    /**
     * job-finalize of a pending member (QEMU job_finalize() → job_do_finalize()): finalizes
     * every member. Nothing when the transaction is already finalizing or aborting.
     */
    void finalizeRequested() {
        List<Job> all;
        lock.lock();
        try {
            if (state != State.OPEN) {
                return;
            }
            all = beginFinalizeLocked();
        } finally {
            lock.unlock();
        }
        finalizeAll(all);
    }

    private List<Job> beginFinalizeLocked() {
        state = State.FINALIZING;
        List<Job> all = List.copyOf(members);
        for (Job m : all) {
            m.markFinishing();
        }
        return all;
    }

    /**
     * QEMU job_do_finalize(): every member's prepare, in order; if all succeed every member
     * commits. The first prepare that fails fails its job, and the transaction aborts with it as
     * the failing member: the others end cancelled. (QEMU 7.2's backup has no prepare, so this
     * cannot be observed there; jblockd's backup flushes its target in prepare.)
     */
    private void finalizeAll(List<Job> all) {
        for (Job m : all) {
            if (!m.runPrepare()) {
                lock.lock();
                try {
                    state = State.ABORTING;
                } finally {
                    lock.unlock();
                }
                abortAll(all, m, false);
                return;
            }
        }
        for (Job m : all) {
            m.finish();
        }
    }

    /**
     * QEMU job_completed_txn_abort(): {@code trigger} failed or was cancelled (its status is
     * {@code aborting} already, or {@code waiting}/{@code pending} for a cancel after its work was
     * done). Cancels and finalizes every member, in order; returns once all are concluded.
     * Nothing when the transaction already aborts (its aborter handles {@code trigger} too) or
     * finalizes (too late to cancel).
     *
     * @param cancelTrigger also mark {@code trigger} cancelled (a user cancel of a member whose
     *                      work was done; a failed or force-cancelled one carries its own flags)
     */
    void abort(Job trigger, boolean cancelTrigger) {
        List<Job> all;
        lock.lock();
        try {
            if (state != State.OPEN) {
                return;
            }
            state = State.ABORTING;
            all = List.copyOf(members);
        } finally {
            lock.unlock();
        }
        abortAll(all, trigger, cancelTrigger);
    }

    private static void abortAll(List<Job> all, Job trigger, boolean cancelTrigger) {
        for (Job m : all) {
            if (m != trigger || cancelTrigger) {
                // job_cancel_async(other, force=true): if one failed, no result matters
                m.cancelByTxn();
            }
            m.awaitCompleted();
            m.finish();
        }
    }
}
