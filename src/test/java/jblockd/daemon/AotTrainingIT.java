package jblockd.daemon;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;

/**
 * bin/_run.sh records the JVM's AOT cache by running {@link AotTraining}; if the workload broke,
 * the script would fall back to no cache (or record a cache of a run that failed half-way)
 * without anyone noticing but the user waiting for warm-up. So it must do all it says against
 * the current daemon: every guest request answered, every job ended without error.
 */
class AotTrainingIT {
    @Test
    void theTrainingWorkloadDoesAllItsWork() throws Exception {
        AotTraining.Summary s = AotTraining.train();
        // five rounds of 4 guest threads, 1500 requests and a flush each
        assertThat(s.guestRequests()).isEqualTo(5 * 4 * 1501L);
        assertThat(s.jobEnds()).containsExactly("b-full ok", "b-inc ok", "m ok");
    }
}
