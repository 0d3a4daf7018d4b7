package jblockd.client;

/**
 * Smoothed transfer rate from (time, offset) samples: an exponential moving average whose
 * weight follows the time between samples (time constant {@value #TAU_SECONDS} s), so irregular
 * polling and event-driven samples do not skew it. Not thread-safe.
 */
final class RateEstimator {
    static final double TAU_SECONDS = 3.0;
    /** Samples closer than this are merged: a rate over a few ms is noise. */
    private static final long MIN_INTERVAL_NANOS = 50_000_000L;

    private long lastNanos = Long.MIN_VALUE;
    private long lastOffset;
    private double rate;
    private boolean haveRate;

    void sample(long nanos, long offset) {
        if (lastNanos == Long.MIN_VALUE || offset < lastOffset) {
            lastNanos = nanos;
            lastOffset = offset;
            return;
        }
        long dtNanos = nanos - lastNanos;
        if (dtNanos < MIN_INTERVAL_NANOS) {
            return;
        }
        double dt = dtNanos / 1e9;
        double instant = (offset - lastOffset) / dt;
        if (haveRate) {
            double alpha = 1 - Math.exp(-dt / TAU_SECONDS);
            rate += alpha * (instant - rate);
        } else {
            rate = instant;
            haveRate = true;
        }
        lastNanos = nanos;
        lastOffset = offset;
    }

    /** Bytes per second, 0 before two samples. */
    double rate() {
        return haveRate ? rate : 0;
    }
}
