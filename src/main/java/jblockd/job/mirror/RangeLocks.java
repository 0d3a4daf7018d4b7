package jblockd.job.mirror;

import java.util.HashSet;
import java.util.Set;

/**
 * Chunk-granular range locks serialising a job's per-chunk work with guest writes to the same
 * chunk (QEMU serialises stream's copy-on-read with guest writes through its tracked requests,
 * block/io.c {@code bdrv_make_request_serialising}). A caller locks every chunk its range
 * touches at once, so two callers never hold parts of each other's ranges (no deadlock).
 * Thread-safe; virtual threads may block in {@link #lock}.
 */
public final class RangeLocks {
    private final long chunk;
    private final Set<Long> locked = new HashSet<>();

    public RangeLocks(long chunk) {
        if (chunk <= 0) {
            throw new IllegalArgumentException("chunk size must be positive");
        }
        this.chunk = chunk;
    }

    public long chunkSize() {
        return chunk;
    }

    /** Blocks until every chunk of {@code [offset, offset+len)} is free, then takes them all. */
    public synchronized void lock(long offset, long len) {
        if (len <= 0) {
            return;
        }
        long a = offset / chunk;
        long b = (offset + len - 1) / chunk;
        boolean interrupted = false;
        while (anyLocked(a, b)) {
            try {
                wait();
            } catch (InterruptedException e) {
                interrupted = true;
            }
        }
        for (long i = a; i <= b; i++) {
            locked.add(i);
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
    }

    public synchronized void unlock(long offset, long len) {
        if (len <= 0) {
            return;
        }
        long a = offset / chunk;
        long b = (offset + len - 1) / chunk;
        for (long i = a; i <= b; i++) {
            locked.remove(i);
        }
        notifyAll();
    }

    private boolean anyLocked(long a, long b) {
        for (long i = a; i <= b; i++) {
            if (locked.contains(i)) {
                return true;
            }
        }
        return false;
    }
}
