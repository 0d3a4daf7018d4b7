package jblockd.job;

/**
 * Thrown out of {@link JobContext#pausePoint()} (and the other blocking context calls) once the
 * job is force-cancelled, so a driver's {@code run} unwinds through its finally blocks. Drivers
 * let it propagate; the framework turns it into {@code BLOCK_JOB_CANCELLED}.
 */
public final class JobCancelledException extends Exception {
    private static final long serialVersionUID = 1L;

    public JobCancelledException() {
        super("Operation canceled", null, false, false);
    }
}
