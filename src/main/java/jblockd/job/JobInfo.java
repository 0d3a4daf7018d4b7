package jblockd.job;

import jblockd.qapi.IoStatus;
import jblockd.qapi.JobStatus;
import jblockd.qapi.JobType;

/**
 * An immutable snapshot of a job for queries (query-block-jobs' BlockJobInfo and query-jobs'
 * JobInfo, reference/jobs.md §7). Taken under the job's lock, so its members agree.
 *
 * @param busy   the job is working (not sleeping in the rate limiter, not at a pause point)
 * @param paused the job is actually paused (a pause was requested and it reached a pause point)
 * @param error  strerror-like text when the job concluded with a failure or was cancelled
 *               ({@code Operation canceled}), else null
 * @param buffer the driver's bounded buffer (a backup's copy-before-write save buffer), or null
 */
public record JobInfo(String id, JobType type, JobStatus status, long len, long offset, long speed,
                      boolean busy, boolean paused, IoStatus ioStatus, boolean autoFinalize,
                      boolean autoDismiss, String error, BufferUse buffer) {

    /** BlockJobInfo.ready: the job is READY or STANDBY (paused while ready). */
    public boolean ready() {
        return status == JobStatus.READY || status == JobStatus.STANDBY;
    }
}
