package jblockd.block.cbw;

import java.nio.ByteBuffer;
import java.util.ArrayDeque;
import java.util.concurrent.Semaphore;

/**
 * The buffers of one {@link BlockCopy}: one per copy in flight, sized to the copy (a whole number
 * of clusters up to one chunk), with the bytes in flight bounded (QEMU's block-copy bounds its
 * in-flight memory the same way, BLOCK_COPY_MAX_MEM).
 *
 * <p>Why sized to the copy and allocated on first need: a scattered incremental backup copies
 * one cluster at a time with dozens in flight; chunk-sized buffers made up front cost 66 MiB of
 * zeroed memory (and about 10 ms) at every job start for 4 MiB used. A buffer given back is kept
 * for the next copy of its size, up to the same bound in all, so a long job allocates no more.
 * <p>Thread-safe.
 */
final class CopyBuffers {
    private final int unit;
    private final int maxUnits;
    private final Semaphore inFlight;
    /** Free buffers by size: index {@code n - 1} holds buffers of {@code n} units. */
    private final ArrayDeque<ByteBuffer>[] free;
    private final int retainLimit;
    private int retained;

    /**
     * @param unit       the size of one unit (a cluster), bytes
     * @param maxUnits   the largest buffer, in units (a chunk)
     * @param boundUnits the most units in flight (and kept free) at once; at least {@code maxUnits}
     */
    @SuppressWarnings("unchecked")
    CopyBuffers(int unit, int maxUnits, int boundUnits) {
        if (boundUnits < maxUnits) {
            throw new IllegalArgumentException("bound " + boundUnits + " below one chunk of " + maxUnits);
        }
        this.unit = unit;
        this.maxUnits = maxUnits;
        this.inFlight = new Semaphore(boundUnits);
        this.retainLimit = boundUnits;
        this.free = new ArrayDeque[maxUnits];
        for (int i = 0; i < maxUnits; i++) {
            free[i] = new ArrayDeque<>();
        }
    }

    /** A buffer of {@code units} units (position 0, limit its capacity); waits while the bound is used up. */
    ByteBuffer take(int units) {
        if (units < 1 || units > maxUnits) {
            throw new IllegalArgumentException("buffer of " + units + " units (1.." + maxUnits + ")");
        }
        inFlight.acquireUninterruptibly(units);
        return reuseOrAllocate(units);
    }

    /** With {@code units} of the bound acquired: a free buffer of that size, or a new one. */
    private ByteBuffer reuseOrAllocate(int units) {
        synchronized (this) {
            ByteBuffer b = free[units - 1].pollFirst();
            if (b != null) {
                retained -= units;
                return b.clear();
            }
        }
        return ByteBuffer.allocateDirect(units * unit);
    }

    /**
     * A buffer of {@code units} units, or null at once when the bound is used up (or the buffer
     * is larger than the largest this pool makes): for callers with another way to go on.
     */
    ByteBuffer tryTake(int units) {
        if (units < 1 || units > maxUnits || !inFlight.tryAcquire(units)) {
            return null;
        }
        return reuseOrAllocate(units);
    }

    /** Bytes of the bound (units times unit size). */
    long boundBytes() {
        return (long) retainLimit * unit;
    }

    /** Gives back a buffer from {@link #take} or {@link #tryTake}. */
    void give(ByteBuffer b) {
        int units = b.capacity() / unit;
        synchronized (this) {
            if (retained + units <= retainLimit) {
                free[units - 1].addFirst(b);
                retained += units;
            }
        }
        inFlight.release(units);
    }
}
