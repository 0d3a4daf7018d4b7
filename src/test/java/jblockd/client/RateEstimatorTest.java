package jblockd.client;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.within;

import org.junit.jupiter.api.Test;

class RateEstimatorTest {
    private static final long SEC = 1_000_000_000L;

    @Test
    void steadyTransferGivesItsRate() {
        RateEstimator r = new RateEstimator();
        for (int i = 0; i <= 10; i++) {
            r.sample(i * SEC / 2, i * (5L << 20)); // 10 MiB/s in half-second steps
        }
        assertThat(r.rate()).isCloseTo(10.0 * (1 << 20), within(1.0));
    }

    @Test
    void aStallDecaysTheRateInsteadOfDroppingItToZero() {
        RateEstimator r = new RateEstimator();
        r.sample(0, 0);
        r.sample(SEC, 10L << 20);
        r.sample(2 * SEC, 10L << 20); // paused for a second
        assertThat(r.rate()).isBetween(5.0 * (1 << 20), 9.0 * (1 << 20));
    }

    @Test
    void noRateBeforeTwoSamplesAndSamplesTooCloseAreMerged() {
        RateEstimator r = new RateEstimator();
        assertThat(r.rate()).isZero();
        r.sample(0, 0);
        r.sample(1_000_000, 1 << 20); // 1 ms later: noise, ignored
        assertThat(r.rate()).isZero();
    }

    @Test
    void offsetGoingBackRestartsTheEstimate() {
        RateEstimator r = new RateEstimator();
        r.sample(0, 100L << 20);
        r.sample(SEC, 50L << 20);
        assertThat(r.rate()).isZero();
        r.sample(2 * SEC, 51L << 20);
        assertThat(r.rate()).isCloseTo(1 << 20, within(1.0));
    }
}
