package jblockd.job;

/**
 * Starts a job's owner thread: one virtual thread per job (STYLE §3.5), named after the job.
 * The status moves to running synchronously, before this returns, as QEMU's job_start() does,
 * so a command that starts a job emits {@code J(created) J(running)} before its reply.
 */
public final class JobRunner {
    private JobRunner() {
    }

    /**
     * Starts {@code job}; returns its thread, or null when the job is no longer {@code created}
     * (its transaction aborted it first) and so never runs.
     */
    public static Thread start(Job job) {
        if (!job.markStarted()) {
            return null;
        }
        return Thread.ofVirtual().name("job-" + job.id()).start(job::runOwner);
    }
}
