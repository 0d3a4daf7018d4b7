package jblockd.compose;

/**
 * A broken expectation of a schedule. {@link #signature} names which check failed (not where),
 * so shrinking can tell "the same failure" from another one a shorter schedule runs into.
 */
final class CompositionFailure extends AssertionError {
    /** The kinds of expectation a schedule holds the daemon to. */
    enum Check {
        /** A guest read (or a full-disk verify read) differs from the model. */
        GUEST_READ,
        /** BLOCK_STATUS says zero where the model has data, or does not describe the range. */
        BLOCK_STATUS,
        /** A guest request failed, or the NBD conversation broke the protocol. */
        GUEST_REQUEST,
        /** A guest request was answered while the run state was stopped. */
        STOPPED_IO,
        /** A backup target differs from the disk at the backup's start. */
        BACKUP_TARGET,
        /** A mirror (or active-commit base) differs from the disk at the end of the job. */
        MIRROR_TARGET,
        /** The device's image chain (files on disk) differs from the model, or names the wrong file. */
        CHAIN,
        /** A job ended with an error, or did not end. */
        JOB,
        /** A QMP command failed that the schedule's state allows. */
        QMP
    }

    private final Check check;
    private final String detail;
    /** Number of the step that failed, or -1 (setup, the end of the schedule). */
    private final int step;

    CompositionFailure(Check check, String message) {
        this(check, message, null, -1);
    }

    CompositionFailure(Check check, String message, Throwable cause) {
        this(check, message, cause, -1);
    }

    private CompositionFailure(Check check, String detail, Throwable cause, int step) {
        super(check + ": " + detail, cause);
        this.check = check;
        this.detail = detail;
        this.step = step;
    }

    /** The same failure, said to have happened at step {@code index}. */
    CompositionFailure atStep(int index, String stepText) {
        return new CompositionFailure(check, "step " + index + " (" + stepText + "): " + detail, getCause(), index);
    }

    /** The same failure with more text after it. */
    CompositionFailure withNote(String note) {
        return new CompositionFailure(check, detail + note, getCause(), step);
    }

    Check check() {
        return check;
    }

    int step() {
        return step;
    }
}
