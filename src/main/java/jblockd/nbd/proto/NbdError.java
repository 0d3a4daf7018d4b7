package jblockd.nbd.proto;

import jblockd.block.Errno;

/**
 * The error values NBD puts on the wire (proto.md "Error values"): independent of the host's
 * errno numbering, though equal to Linux's. {@link #of(Errno)} maps a block-layer errno the way
 * QEMU's nbd/server.c system_errno_to_nbd_errno() does.
 */
public enum NbdError {
    EPERM(1),
    EIO(5),
    ENOMEM(12),
    EINVAL(22),
    ENOSPC(28),
    EOVERFLOW(75),
    ENOTSUP(95),
    ESHUTDOWN(108);

    private final int code;

    NbdError(int code) {
        this.code = code;
    }

    public int code() {
        return code;
    }

    public static NbdError of(Errno errno) {
        return switch (errno) {
            case EPERM, EROFS -> EPERM;
            case EIO -> EIO;
            case ENOMEM -> ENOMEM;
            case ENOSPC, EFBIG -> ENOSPC;
            case EOVERFLOW -> EOVERFLOW;
            case ENOTSUP -> ENOTSUP;
            case ESHUTDOWN -> ESHUTDOWN;
            default -> EINVAL;
        };
    }

    /** Back from a wire code (client side); unknown codes are EINVAL as proto.md asks. */
    public static NbdError fromCode(int code) {
        for (NbdError e : values()) {
            if (e.code == code) {
                return e;
            }
        }
        return EINVAL;
    }

    public Errno errno() {
        return Errno.fromCode(code);
    }
}
