package jblockd.job;

/**
 * Starts a job's owner thread: one virtual thread per job (STYLE §3.5), named after the job.
 * The status moves to running synchronously, before this returns, as QEMU's job_start() does,
 * so a command that starts a job emits {@code J(created) J(running)} before its reply.
 */
public final class JobRunner {
    private JobRunner() {
    }

    public static Thread start(Job job) {
        job.markStarted();
        return Thread.ofVirtual().name("job-" + job.id()).start(job::runOwner);
    }
}
