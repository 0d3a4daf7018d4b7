package jblockd.job;

/**
 * The job speed limit: a virtual-clock token bucket (nbdkit filters/rate/bucket.h, Lucene's
 * RateLimiter.SimpleRateLimiter). Each request is charged {@code bytes / speed} seconds on a
 * clock that never runs behind real time by more than one slice; a request waits until the
 * clock's previous charges are paid. So the first request goes at once (QEMU also grants one
 * chunk up front, reference/backup.md §5) and the long-run average is exactly {@code speed}.
 * <p>
 * Not thread-safe by itself: {@link Job} calls it under its lock. {@code speed} may change at
 * any time ({@link #setSpeed}); outstanding debt is rescaled to the new speed, so a lowered or
 * raised limit takes effect at once, not after the debt of the old one.
 */
final class RateLimiter {
    /**
     * Unused credit is kept for at most one slice: a job that idled (paused, waiting on I/O) may
     * catch up by 100 ms worth of bytes, not by everything it missed (QEMU's 100 ms slice).
     */
    static final long SLICE_NANOS = 100_000_000L;

    private long speed;
    /** The virtual time (System.nanoTime based) by which everything charged so far is paid. */
    private long paidUntil;

    RateLimiter(long speed, long now) {
        this.speed = speed;
        this.paidUntil = now;
    }

    long speed() {
        return speed;
    }

    void setSpeed(long newSpeed, long now) {
        if (newSpeed > 0 && speed > 0 && paidUntil > now) {
            double debt = paidUntil - now;
            paidUntil = now + (long) (debt * speed / newSpeed);
        } else if (newSpeed == 0) {
            paidUntil = now;
        }
        speed = newSpeed;
    }

    /** Nanoseconds to wait before the next request may be dispatched (0: go now). */
    long delayNanos(long now) {
        if (speed <= 0) {
            return 0;
        }
        return Math.max(0, paidUntil - now);
    }

    /** Charges a dispatched request of {@code bytes}. */
    void charge(long bytes, long now) {
        if (speed <= 0) {
            paidUntil = now;
            return;
        }
        long base = Math.max(paidUntil, now - SLICE_NANOS);
        paidUntil = base + (long) (bytes * 1e9 / speed);
    }
}
