package jblockd.block;

import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

/**
 * Reads in flight over byte ranges, for a writer that must not overtake the reads that began
 * before it (QEMU's tracked requests against a serialising request; copy-before-write's
 * {@code frozen_read_reqs}). A fleecing reader may decide to read a cluster from the live disk
 * (the scratch does not hold it yet) and read it a moment later: the guest write that copies
 * the cluster out first must wait for that read before it changes the live disk, or the reader
 * would see the new data.
 * <p>
 * Readers never wait here, so a read cannot deadlock against a writer; a writer waits only for
 * reads already in flight when it asks, so new reads cannot starve it. Thread-safe.
 */
public final class TrackedReads {
    private final ReentrantLock lock = new ReentrantLock();
    private final Condition ended = lock.newCondition();
    /** ticket → {offset, end} of the reads in flight; tickets grow with time. */
    private final Map<Long, long[]> inFlight = new HashMap<>();
    private long nextTicket;

    /** Registers a read of {@code [offset, offset+length)}; returns the ticket for {@link #end}. */
    public long begin(long offset, long length) {
        lock.lock();
        try {
            long t = nextTicket++;
            inFlight.put(t, new long[] {offset, offset + length});
            return t;
        } finally {
            lock.unlock();
        }
    }

    public void end(long ticket) {
        lock.lock();
        try {
            inFlight.remove(ticket);
            ended.signalAll();
        } finally {
            lock.unlock();
        }
    }

    /**
     * Waits until no read that was in flight when this was called and overlaps
     * {@code [offset, offset+length)} is still in flight. Reads that begin later do not count.
     */
    public void awaitOverlapping(long offset, long length) {
        long end = offset + length;
        lock.lock();
        try {
            long mark = nextTicket;
            while (overlaps(mark, offset, end)) {
                ended.awaitUninterruptibly();
            }
        } finally {
            lock.unlock();
        }
    }

    private boolean overlaps(long mark, long offset, long end) {
        for (Map.Entry<Long, long[]> e : inFlight.entrySet()) {
            long[] r = e.getValue();
            if (e.getKey() < mark && r[0] < end && offset < r[1]) {
                return true;
            }
        }
        return false;
    }
}
