package jblockd.block;

import java.io.IOException;

/**
 * An I/O failure with an errno-like {@link Errno}. Every driver reports failures of the guest
 * data path as IoError so that policies (rerror/werror, job on-*-error) and NBD replies can
 * act on the kind. {@link #getMessage()} is for people.
 */
public class IoError extends IOException {
    private static final long serialVersionUID = 1L;
    private final Errno errno;

    public IoError(Errno errno, String detail) {
        super(detail == null || detail.isEmpty() ? errno.strerror() : detail);
        this.errno = errno;
    }

    public IoError(Errno errno, String detail, Throwable cause) {
        super(detail == null || detail.isEmpty() ? errno.strerror() : detail, cause);
        this.errno = errno;
    }

    public static IoError of(Errno errno) {
        return new IoError(errno, null);
    }

    public Errno errno() {
        return errno;
    }

    /**
     * Wraps any IOException as an IoError: an IoError is returned as is, a JDK exception that
     * says "No space left on device" becomes ENOSPC, anything else EIO.
     */
    public static IoError wrap(IOException e) {
        if (e instanceof IoError io) {
            return io;
        }
        String msg = String.valueOf(e.getMessage());
        if (msg.contains("No space left on device")) {
            return new IoError(Errno.ENOSPC, null, e);
        }
        if (e instanceof java.nio.file.NoSuchFileException) {
            return new IoError(Errno.ENOENT, msg, e);
        }
        if (e instanceof java.nio.file.AccessDeniedException) {
            return new IoError(Errno.EACCES, msg, e);
        }
        return new IoError(Errno.EIO, msg, e);
    }
}
