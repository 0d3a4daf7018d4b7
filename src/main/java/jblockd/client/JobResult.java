package jblockd.client;

import jblockd.qapi.JobType;

/**
 * How a job ended: from {@code BLOCK_JOB_COMPLETED} (without {@code error}: COMPLETED, with it:
 * FAILED) or {@code BLOCK_JOB_CANCELLED} (CANCELLED), with the final {@code offset}/{@code len}.
 * A mirror cancelled after READY ends COMPLETED, as in QEMU (reference/jobs.md §5).
 */
public record JobResult(String id, JobType type, Outcome outcome, long offset, long len, String error) {

    public enum Outcome { COMPLETED, FAILED, CANCELLED }

    public boolean succeeded() {
        return outcome == Outcome.COMPLETED;
    }
}
