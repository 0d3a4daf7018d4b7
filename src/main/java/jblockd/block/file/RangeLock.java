package jblockd.block.file;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

/**
 * Exclusive locks on byte ranges. With O_DIRECT an unaligned write is a read-modify-write of
 * whole aligned blocks; two such writes (or one and a fallocate) touching the same block would
 * otherwise lose one update, which is why QEMU serialises overlapping requests in block/io.c
 * (tracked requests, "serialising"). Few ranges are held at once, so a list is enough.
 * ReentrantLock, not synchronized: waiting virtual threads unmount.
 */
final class RangeLock {
    private final ReentrantLock lock = new ReentrantLock();
    private final Condition changed = lock.newCondition();
    private final List<long[]> held = new ArrayList<>();

    /** A held range; {@link #close()} releases it. */
    final class Held implements AutoCloseable {
        private final long[] range;

        private Held(long[] range) {
            this.range = range;
        }

        @Override
        public void close() {
            lock.lock();
            try {
                held.remove(range);
                changed.signalAll();
            } finally {
                lock.unlock();
            }
        }
    }

    /** Waits until no held range overlaps {@code [start, end)}, then holds it. */
    Held acquire(long start, long end) {
        long[] range = {start, end};
        lock.lock();
        try {
            while (overlaps(start, end)) {
                changed.awaitUninterruptibly();
            }
            held.add(range);
            return new Held(range);
        } finally {
            lock.unlock();
        }
    }

    private boolean overlaps(long start, long end) {
        for (long[] r : held) {
            if (r[0] < end && start < r[1]) {
                return true;
            }
        }
        return false;
    }
}
