package jblockd.job.create;

import jblockd.job.JobContext;
import jblockd.job.JobDriver;
import jblockd.qapi.JobType;

/**
 * The job of {@code blockdev-create} (QEMU 7.2 block/create.c blockdev_create_run): a plain job
 * of type {@code create} (no BLOCK_JOB_* events, not in query-block-jobs) whose run is the
 * driver's create step. Progress is 0 of 1 while it runs and 1 of 1 afterwards, whether the step
 * succeeded or not, exactly as QEMU's (query-jobs of a failed one shows 1/1 and the error).
 * <p>
 * A failure's text is the create step's own message (QEMU's job error is the Error's text,
 * {@code Image size must be a multiple of 512 bytes}), not an errno's strerror.
 */
public final class CreateJob implements JobDriver {

    /** The driver's create step; runs on the job's thread. */
    @FunctionalInterface
    public interface Step {
        void run() throws Exception;
    }

    /** A create step failed: its message is the job's error. */
    static final class CreateFailed extends Exception {
        private static final long serialVersionUID = 1L;

        CreateFailed(String message, Throwable cause) {
            super(message, cause);
        }
    }

    private final Step step;

    public CreateJob(Step step) {
        this.step = step;
    }

    @Override
    public JobType type() {
        return JobType.CREATE;
    }

    @Override
    public void run(JobContext ctx) throws Exception {
        ctx.setLen(1);
        try {
            step.run();
        } catch (Exception e) {
            throw new CreateFailed(e.getMessage() != null ? e.getMessage() : e.toString(), e);
        } finally {
            ctx.setOffset(1);
        }
    }
}
