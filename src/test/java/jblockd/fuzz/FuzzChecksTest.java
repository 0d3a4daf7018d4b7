package jblockd.fuzz;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.ArrayDeque;
import java.util.List;
import java.util.concurrent.Callable;

import org.junit.jupiter.api.Test;

/**
 * The allocation bound of {@link FuzzChecks#bounded}: an input's own allocation repeats, a
 * one-off does not. Runs are measured by a script of figures, not by the process's counters
 * (which other threads' class loading makes skip the check).
 */
class FuzzChecksTest {
    private static final long OVER = FuzzChecks.ALLOCATION_SLACK + (1 << 20);

    /** Runs the work and reports the next scripted allocation; counts the runs. */
    private static final class Script implements FuzzChecks.Meter {
        private final ArrayDeque<Long> figures;
        int runs;

        Script(Long... figures) {
            this.figures = new ArrayDeque<>(List.of(figures));
        }

        @Override
        public <T> FuzzChecks.Measured<T> measure(Callable<T> work) throws Exception {
            runs++;
            return new FuzzChecks.Measured<>(work.call(), figures.removeFirst(), false);
        }
    }

    @Test
    void anInputThatAllocatesOverTheBoundEachTimeFails() {
        Script twiceOver = new Script(OVER, OVER);
        assertThatThrownBy(() -> FuzzChecks.bounded(1, () -> "r", twiceOver))
                .isInstanceOf(AssertionError.class)
                .hasMessageContaining("bytes allocated for a 1-byte input (first run: " + OVER + ")");
        assertThat(twiceOver.runs).isEqualTo(2);
    }

    @Test
    void aOneOffAllocationOfTheFirstRunIsNotTheInputs() throws Exception {
        Script onceOver = new Script(OVER, 1000L);
        assertThat(FuzzChecks.bounded(1, () -> "first", onceOver)).isEqualTo("first");
        assertThat(onceOver.runs).isEqualTo(2);
    }

    @Test
    void underTheBoundTheWorkRunsOnce() throws Exception {
        Script under = new Script(64L + FuzzChecks.ALLOCATION_SLACK);
        FuzzChecks.bounded(1, () -> "r", under);
        assertThat(under.runs).isEqualTo(1);
    }

    @Test
    void theProcessMeterCountsWhatTheWorkAllocates() throws Exception {
        FuzzChecks.Measured<Integer> m = FuzzChecks.PROCESS.measure(() -> new byte[8 << 20].length);
        assertThat(m.result()).isEqualTo(8 << 20);
        assertThat(m.allocated()).isGreaterThanOrEqualTo(8 << 20);
    }
}
