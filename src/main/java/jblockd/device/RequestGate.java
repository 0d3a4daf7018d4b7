package jblockd.device;

import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

/**
 * The drain counter of one {@link Device} (QEMU's BlockBackend in-flight count and
 * {@code quiesce_counter}): every guest request is counted between {@link #enter()} and
 * {@link #leave()}; while a drained section is open ({@link #drainBegin()} ..
 * {@link #drainEnd()}) new requests wait in {@link #enter()} and the section begins only once
 * the requests in flight have left. Sections nest and may overlap from several threads.
 * <p>
 * A request must not open a drained section on its own device (it would wait for itself).
 * Thread-safe; the guest fast path takes no lock.
 */
final class RequestGate {
    private final ReentrantLock lock = new ReentrantLock();
    private final Condition changed = lock.newCondition();
    private final AtomicInteger inFlight = new AtomicInteger();
    /** Open drained sections; written under the lock, read without it by the fast path. */
    private volatile int drainDepth;

    /**
     * Counts the caller in, waiting while a drained section is open. Count first, then look at
     * the depth: {@link #drainBegin()} raises the depth first, then looks at the count; both are
     * volatile, so either the request sees the section (and backs out) or the section sees the
     * request (and waits for it to leave).
     */
    void enter() {
        while (true) {
            inFlight.incrementAndGet();
            if (drainDepth == 0) {
                return;
            }
            leave();
            lock.lock();
            try {
                while (drainDepth > 0) {
                    changed.awaitUninterruptibly();
                }
            } finally {
                lock.unlock();
            }
        }
    }

    void leave() {
        if (inFlight.decrementAndGet() == 0 && drainDepth > 0) {
            lock.lock();
            try {
                changed.signalAll();
            } finally {
                lock.unlock();
            }
        }
    }

    /** Opens a drained section: returns once no request is in flight; new ones wait. */
    void drainBegin() {
        lock.lock();
        try {
            drainDepth++;
            while (inFlight.get() > 0) {
                changed.awaitUninterruptibly();
            }
        } finally {
            lock.unlock();
        }
    }

    /** Closes one section; when the last one closes the waiting requests go on. */
    void drainEnd() {
        lock.lock();
        try {
            if (drainDepth == 0) {
                throw new IllegalStateException("drainEnd without drainBegin");
            }
            drainDepth--;
            changed.signalAll();
        } finally {
            lock.unlock();
        }
    }

    boolean drained() {
        return drainDepth > 0;
    }
}
