package jblockd.job;

import jblockd.block.Errno;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.ErrorAction;
import jblockd.qapi.IoStatus;

/**
 * Resolves a job error option against an error (seed 000; QEMU blockjob.c
 * block_job_error_action(); reference/errors.md §1). Stateless.
 */
public final class ErrorPolicy {
    private ErrorPolicy() {
    }

    /** {@code enospc} and {@code auto} stop on ENOSPC and report anything else. */
    public static ErrorAction resolve(BlockdevOnError policy, Errno errno) {
        return switch (policy) {
            case REPORT -> ErrorAction.REPORT;
            case IGNORE -> ErrorAction.IGNORE;
            case STOP -> ErrorAction.STOP;
            case ENOSPC, AUTO -> errno == Errno.ENOSPC ? ErrorAction.STOP : ErrorAction.REPORT;
        };
    }

    /** The io-status a {@code stop} sets: {@code nospace} for ENOSPC, else {@code failed}. */
    public static IoStatus ioStatusFor(Errno errno) {
        return errno == Errno.ENOSPC ? IoStatus.NOSPACE : IoStatus.FAILED;
    }
}
