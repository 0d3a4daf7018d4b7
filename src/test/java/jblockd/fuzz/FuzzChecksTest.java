package jblockd.fuzz;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** The allocation bound of {@link FuzzChecks#bounded}: an input's own allocation repeats, a one-off does not. */
class FuzzChecksTest {
    private static final int CHUNK = 32 << 20;
    /** Over the bound for a 1-byte input: 64 + 256 MiB. */
    private static final int CHUNKS_OVER = (int) (FuzzChecks.ALLOCATION_SLACK / CHUNK) + 2;

    /** Garbage, but counted: allocated bytes, not live ones. */
    private static long allocate(int chunks) {
        long sum = 0;
        for (int i = 0; i < chunks; i++) {
            sum += new byte[CHUNK].length;
        }
        return sum;
    }

    @BeforeEach
    void classesLoaded() throws Exception {
        FuzzChecks.bounded(1, () -> allocate(1)); // the first use loads the checker's own classes
    }

    @Test
    void anInputThatAllocatesOverTheBoundEachTimeFails() {
        AtomicInteger runs = new AtomicInteger();
        assertThatThrownBy(() -> FuzzChecks.bounded(1, () -> {
            runs.incrementAndGet();
            return allocate(CHUNKS_OVER);
        })).isInstanceOf(AssertionError.class).hasMessageContaining("bytes allocated for a 1-byte input");
        assertThat(runs).hasValue(2);
    }

    @Test
    void aOneOffAllocationOfTheFirstRunIsNotTheInputs() throws Exception {
        AtomicInteger runs = new AtomicInteger();
        long result = FuzzChecks.bounded(1, () -> allocate(runs.getAndIncrement() == 0 ? CHUNKS_OVER : 1));
        assertThat(result).as("the first run's result").isEqualTo((long) CHUNKS_OVER * CHUNK);
        assertThat(runs).hasValue(2);
    }

    @Test
    void underTheBoundTheWorkRunsOnce() throws Exception {
        AtomicInteger runs = new AtomicInteger();
        FuzzChecks.bounded(1, () -> allocate(runs.incrementAndGet()));
        assertThat(runs).hasValue(1);
    }
}
