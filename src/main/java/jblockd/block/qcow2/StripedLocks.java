package jblockd.block.qcow2;

import java.util.concurrent.locks.Lock;
import java.util.concurrent.locks.ReentrantReadWriteLock;

/**
 * Guest-cluster range locks, striped. A writer that only overwrites clusters it already owns
 * takes the stripes of its clusters shared, so such writes run in parallel; a request that
 * changes L2 entries (allocation, COW, zero, discard) takes them exclusively, so two writers of
 * the same unallocated cluster never both allocate it (QEMU serialises them through its
 * cluster-allocation dependency list). Stripes are always taken in ascending order: no deadlock.
 * Reads take no stripe.
 */
final class StripedLocks {
    private static final int STRIPES = 256;
    private final ReentrantReadWriteLock[] locks = new ReentrantReadWriteLock[STRIPES];

    StripedLocks() {
        for (int i = 0; i < STRIPES; i++) {
            locks[i] = new ReentrantReadWriteLock();
        }
    }

    /** Held stripes; {@link #close()} releases them. */
    final class Held implements AutoCloseable {
        private final Lock[] held;
        private final int count;

        private Held(Lock[] held, int count) {
            this.held = held;
            this.count = count;
        }

        @Override
        public void close() {
            for (int i = count - 1; i >= 0; i--) {
                held[i].unlock();
            }
        }
    }

    /** Locks the stripes of guest clusters {@code [first, last]}. */
    Held lock(long first, long last, boolean exclusive) {
        boolean[] want = new boolean[STRIPES];
        if (last - first + 1 >= STRIPES) {
            java.util.Arrays.fill(want, true);
        } else {
            for (long c = first; c <= last; c++) {
                want[(int) (c % STRIPES)] = true;
            }
        }
        Lock[] held = new Lock[STRIPES];
        int n = 0;
        for (int i = 0; i < STRIPES; i++) {
            if (want[i]) {
                Lock l = exclusive ? locks[i].writeLock() : locks[i].readLock();
                l.lock();
                held[n++] = l;
            }
        }
        return new Held(held, n);
    }
}
