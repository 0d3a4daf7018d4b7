package jblockd.job;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;

class RateLimiterTest {
    private static final long MS = 1_000_000L;

    /** Simulated clock: a job that dispatches as soon as allowed gets exactly speed on average. */
    @Test
    void averageRateIsExactAfterTheFirstChunk() {
        RateLimiter r = new RateLimiter(1 << 20, 0);
        long now = 0;
        long bytes = 0;
        long chunk = 64 * 1024;
        while (now < 10_000 * MS) {
            now += r.delayNanos(now);
            r.charge(chunk, now);
            bytes += chunk;
        }
        double rate = bytes / (now / 1e9);
        // one chunk is granted up front: (10 s * 1 MiB/s + 64 KiB) / 10 s
        assertThat(rate).isBetween((1 << 20) * 0.99, (1 << 20) * 1.01);
    }

    @Test
    void firstRequestGoesAtOnceAndTheNextWaitsItsCost() {
        RateLimiter r = new RateLimiter(1 << 20, 0);
        assertThat(r.delayNanos(0)).isZero();
        r.charge(1 << 20, 0);
        assertThat(r.delayNanos(0)).isEqualTo(1_000_000_000L);
    }

    @Test
    void idleTimeEarnsAtMostOneSliceOfCredit() {
        RateLimiter r = new RateLimiter(1_000_000, 0);
        r.charge(1_000_000, 0);
        long now = 60_000 * MS; // a minute idle
        r.charge(1_000_000, now);
        // debt restarts from now - 100 ms, not from a minute ago
        assertThat(r.delayNanos(now)).isEqualTo(900 * MS);
    }

    @Test
    void speedChangeRescalesOutstandingDebt() {
        RateLimiter r = new RateLimiter(1_000_000, 0);
        r.charge(1_000_000, 0);
        r.setSpeed(4_000_000, 0);
        assertThat(r.delayNanos(0)).isEqualTo(250 * MS);
        r.setSpeed(0, 0);
        assertThat(r.delayNanos(0)).isZero();
        r.charge(1 << 30, 0);
        assertThat(r.delayNanos(0)).isZero();
    }
}
