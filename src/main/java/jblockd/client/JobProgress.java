package jblockd.client;

import java.time.Duration;
import jblockd.qapi.IoStatus;
import jblockd.qapi.JobStatus;
import jblockd.qapi.JobType;

/**
 * A snapshot of a job's progress, as a person wants it: QEMU's {@code offset}/{@code len} plus
 * the {@code percent} done, a smoothed {@code rate} (bytes per second, exponential average over
 * a few seconds) and the expected time left ({@code eta}, null when unknown or paused).
 * {@code lastError} describes the last BLOCK_JOB_ERROR ("read error, action stop"), or null.
 * {@code awaitingFinalize} is true while a job started with {@code auto-finalize: false} waits in
 * {@code pending} for {@code job-finalize} (BLOCK_JOB_PENDING was seen). {@code finished} is
 * true in the last snapshot, delivered once the job's outcome is known.
 */
public record JobProgress(String id, JobType type, JobStatus status, long offset, long len, double percent,
                          double rate, Duration eta, IoStatus ioStatus, boolean paused, boolean ready,
                          long speed, String lastError, boolean awaitingFinalize, boolean finished) {
}
