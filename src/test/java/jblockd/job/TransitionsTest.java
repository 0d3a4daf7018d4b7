package jblockd.job;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.EnumSet;
import java.util.Set;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import jblockd.qapi.JobStatus;
import jblockd.qapi.JobVerb;
import jblockd.qapi.QmpError;

class TransitionsTest {

    /** reference/jobs.md §2, written out independently of the implementation. */
    private static final String[] STT = {
            // U C R P Y S W D X E N
            "0 1 0 0 0 0 0 0 0 0 0", // undefined
            "0 0 1 0 0 0 0 0 1 0 1", // created
            "0 0 0 1 1 0 1 0 1 0 0", // running
            "0 0 1 0 0 0 0 0 0 0 0", // paused
            "0 0 0 0 0 1 1 0 1 0 0", // ready
            "0 0 0 0 1 0 0 0 0 0 0", // standby
            "0 0 0 0 0 0 0 1 1 0 0", // waiting
            "0 0 0 0 0 0 0 0 1 1 0", // pending
            "0 0 0 0 0 0 0 0 1 1 0", // aborting
            "0 0 0 0 0 0 0 0 0 0 1", // concluded
            "0 0 0 0 0 0 0 0 0 0 0", // null
    };

    @Test
    void statusTableMatchesQemu72() {
        JobStatus[] all = JobStatus.values();
        for (int from = 0; from < all.length; from++) {
            String[] row = STT[from].split(" ");
            for (int to = 0; to < all.length; to++) {
                assertThat(Transitions.allowed(all[from], all[to]))
                        .as(all[from] + " -> " + all[to]).isEqualTo(row[to].equals("1"));
            }
        }
    }

    @ParameterizedTest
    @EnumSource(value = JobVerb.class, names = "CHANGE", mode = EnumSource.Mode.EXCLUDE)
    void verbTableMatchesQemu72(JobVerb verb) {
        Set<JobStatus> live = EnumSet.of(JobStatus.CREATED, JobStatus.RUNNING, JobStatus.PAUSED,
                JobStatus.READY, JobStatus.STANDBY);
        Set<JobStatus> expected = switch (verb) {
            case CANCEL -> EnumSet.of(JobStatus.CREATED, JobStatus.RUNNING, JobStatus.PAUSED, JobStatus.READY,
                    JobStatus.STANDBY, JobStatus.WAITING, JobStatus.PENDING);
            case PAUSE, RESUME, SET_SPEED -> live;
            case COMPLETE -> EnumSet.of(JobStatus.READY, JobStatus.STANDBY);
            case FINALIZE -> EnumSet.of(JobStatus.PENDING);
            case DISMISS -> EnumSet.of(JobStatus.CONCLUDED);
            case CHANGE -> throw new AssertionError();
        };
        for (JobStatus s : JobStatus.values()) {
            assertThat(Transitions.accepts(verb, s)).as(verb + " in " + s).isEqualTo(expected.contains(s));
        }
    }

    @Test
    void refusedVerbHasQemusUniformMessage() {
        assertThatThrownBy(() -> Transitions.checkVerb("drive0", JobStatus.PENDING, JobVerb.DISMISS))
                .isInstanceOf(QmpError.class)
                .hasMessage("Job 'drive0' in state 'pending' cannot accept command verb 'dismiss'");
        assertThatThrownBy(() -> Transitions.checkVerb("drive0", JobStatus.RUNNING, JobVerb.COMPLETE))
                .hasMessage("Job 'drive0' in state 'running' cannot accept command verb 'complete'");
    }
}
