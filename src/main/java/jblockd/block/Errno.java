package jblockd.block;

/**
 * The errno-like kind of an I/O failure. It drives error policies (ENOSPC becomes io-status
 * {@code nospace}), NBD reply codes and the strerror text of QMP events, so programs branch on
 * the kind and never on message text. Codes are Linux's.
 */
public enum Errno {
    EPERM(1, "Operation not permitted"),
    ENOENT(2, "No such file or directory"),
    EINTR(4, "Interrupted system call"),
    EIO(5, "Input/output error"),
    EAGAIN(11, "Resource temporarily unavailable"),
    ENOMEM(12, "Cannot allocate memory"),
    EACCES(13, "Permission denied"),
    EBUSY(16, "Device or resource busy"),
    EINVAL(22, "Invalid argument"),
    EFBIG(27, "File too large"),
    ENOSPC(28, "No space left on device"),
    EROFS(30, "Read-only file system"),
    ELOOP(40, "Too many levels of symbolic links"),
    EOVERFLOW(75, "Value too large for defined data type"),
    ENOTSUP(95, "Operation not supported"),
    ESHUTDOWN(108, "Cannot send after transport endpoint shutdown"),
    ETIMEDOUT(110, "Connection timed out"),
    ECANCELED(125, "Operation canceled");

    private final int code;
    private final String strerror;

    Errno(int code, String strerror) {
        this.code = code;
        this.strerror = strerror;
    }

    /** Linux errno value, as used on the NBD wire and in blkdebug's {@code errno =} option. */
    public int code() {
        return code;
    }

    /** glibc's strerror() text, as QEMU puts it in BLOCK_IO_ERROR.reason and job errors. */
    public String strerror() {
        return strerror;
    }

    /** The kind for a numeric errno; unknown numbers map to EIO (what QEMU reports for them). */
    public static Errno fromCode(int code) {
        for (Errno e : values()) {
            if (e.code == code) {
                return e;
            }
        }
        return EIO;
    }
}
