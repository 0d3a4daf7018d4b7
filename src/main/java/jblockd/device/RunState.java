package jblockd.device;

import java.util.Objects;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

import jblockd.qapi.QapiEvents;
import jblockd.qapi.RunStatus;

/**
 * The daemon's run state (QEMU's RunState, SPEC §5) and the gate every guest request passes.
 * While the state is not {@code running} guest requests wait in {@link #enterGuest()}; nothing is
 * answered and nothing is lost. {@link #stop()} is QMP {@code stop} (waits for requests already
 * past the gate, like QEMU's vm_stop draining all I/O); {@link #ioError()} is what a request
 * failing under a {@code stop}/{@code enospc} policy calls; {@link #cont()} resets every device's
 * io-status and opens the gate again, so the failed requests retry.
 * <p>
 * STOP and RESUME are emitted under the lock together with the state change they report, so
 * with any number of clients racing they strictly alternate, in the order of the changes
 * ({@link QapiEvents} never blocks).
 * Block jobs never pass this gate: they use nodes directly and run on while guests are stopped.
 */
public final class RunState {
    private final QapiEvents events;
    private final Runnable resetIoStatus;
    /** Guards state changes and the waits; the guest fast path does not take it. */
    private final ReentrantLock lock = new ReentrantLock();
    private final Condition changed = lock.newCondition();
    /** Written under {@link #lock} only; read without it by the guest fast path. */
    private volatile RunStatus status = RunStatus.RUNNING;
    private final AtomicInteger inFlight = new AtomicInteger();
    /** How many times {@link #cont()} resumed; a waiting {@link #stop()} ends when it moves. Guarded by lock. */
    private long resumes;

    /**
     * @param resetIoStatus called by {@code cont} to set every device's io-status back to ok
     *                      (QEMU's bdrv_iostatus_reset_all)
     */
    public RunState(QapiEvents events, Runnable resetIoStatus) {
        this.events = Objects.requireNonNull(events);
        this.resetIoStatus = Objects.requireNonNull(resetIoStatus);
    }

    public RunStatus status() {
        return status;
    }

    public boolean running() {
        return status() == RunStatus.RUNNING;
    }

    /**
     * Waits until the state is running, then counts the caller as a guest request in flight.
     * Every guest request passes here, so the running case takes no lock: count first, then
     * look at the state. {@link #stop()} changes the state first, then looks at the count; both
     * are volatile, so either the request sees the stop (and backs out) or stop sees the request
     * (and waits for it).
     */
    public void enterGuest() {
        while (true) {
            inFlight.incrementAndGet();
            if (status == RunStatus.RUNNING) {
                return;
            }
            leaveGuest();
            lock.lock();
            try {
                while (status != RunStatus.RUNNING) {
                    changed.awaitUninterruptibly();
                }
            } finally {
                lock.unlock();
            }
        }
    }

    /** Ends a request started with {@link #enterGuest()}. */
    public void leaveGuest() {
        // Only a stop() waiting for the last request needs a signal (see enterGuest).
        if (inFlight.decrementAndGet() == 0 && status != RunStatus.RUNNING) {
            lock.lock();
            try {
                changed.signalAll();
            } finally {
                lock.unlock();
            }
        }
    }

    /**
     * QMP {@code stop}: holds new guest requests, emits STOP, then waits for the requests in
     * flight (QEMU's do_vm_stop(): the state change and STOP first, then bdrv_drain_all()).
     * Already stopped (paused or io-error): nothing changes and no event (QEMU returns {}).
     * A {@code cont} from another client while this waits ends the wait: the guests run again,
     * so there is nothing left to wait for (waiting on would never end under guest load).
     */
    public void stop() {
        lock.lock();
        try {
            if (status != RunStatus.RUNNING) {
                return;
            }
            status = RunStatus.PAUSED;
            // Under the lock, like every run-state event, so a racing cont's RESUME follows it.
            events.stop();
            long stoppedIn = resumes;
            while (inFlight.get() > 0 && resumes == stoppedIn) {
                changed.awaitUninterruptibly();
            }
        } finally {
            lock.unlock();
        }
    }

    /**
     * A guest request failed under a stopping policy (its BLOCK_IO_ERROR is already sent):
     * the state becomes io-error with one STOP event; when already stopped, nothing more.
     */
    public void ioError() {
        lock.lock();
        try {
            if (status == RunStatus.RUNNING) {
                status = RunStatus.IO_ERROR;
                events.stop();
            }
        } finally {
            lock.unlock();
        }
    }

    /**
     * QMP {@code cont}: io-statuses back to ok, then running again with a RESUME event; held and
     * failed requests go on (a request that fails again stops again). Running: no event.
     */
    public void cont() {
        lock.lock();
        try {
            // Under the lock: a request failing meanwhile either set its io-status before this
            // reset (and its ioError() then finds the state stopped) or after the RESUME.
            resetIoStatus.run();
            if (status == RunStatus.RUNNING) {
                return;
            }
            status = RunStatus.RUNNING;
            resumes++;
            // RESUME goes out before any held request can fail again and emit STOP.
            events.resume();
            changed.signalAll();
        } finally {
            lock.unlock();
        }
    }
}
