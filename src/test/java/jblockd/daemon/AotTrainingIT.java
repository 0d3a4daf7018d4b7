package jblockd.daemon;

import static org.assertj.core.api.Assertions.assertThatCode;

import org.junit.jupiter.api.Test;

/**
 * bin/_run.sh records the JVM's AOT cache by running {@link AotTraining}; if the workload broke,
 * the script would fall back to no cache without anyone noticing but the user waiting for
 * warm-up. So it must run through against the current daemon.
 */
class AotTrainingIT {
    @Test
    void theTrainingWorkloadRunsThrough() {
        assertThatCode(() -> AotTraining.main(new String[0])).doesNotThrowAnyException();
    }
}
