package jblockd.nbd.proto;

/**
 * Wire constants of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md), fixed newstyle only.
 * Names follow proto.md without the {@code NBD_} prefix.
 */
public final class Nbd {
    private Nbd() {
    }

    // ---- handshake -------------------------------------------------------------------------
    /** "NBDMAGIC": the first 8 bytes the server sends. */
    public static final long NBDMAGIC = 0x4e42444d41474943L;
    /** "IHAVEOPT": newstyle magic after NBDMAGIC, and the prefix of every option request. */
    public static final long IHAVEOPT = 0x49484156454F5054L;
    /** Magic of every option reply. */
    public static final long OPT_REPLY_MAGIC = 0x0003e889045565a9L;

    /** Handshake flags (u16, server). */
    public static final int FLAG_FIXED_NEWSTYLE = 1;
    public static final int FLAG_NO_ZEROES = 2;
    /** Client flags (u32): the same bits. */
    public static final int FLAG_C_FIXED_NEWSTYLE = 1;
    public static final int FLAG_C_NO_ZEROES = 2;

    // ---- options ----------------------------------------------------------------------------
    public static final int OPT_EXPORT_NAME = 1;
    public static final int OPT_ABORT = 2;
    public static final int OPT_LIST = 3;
    public static final int OPT_STARTTLS = 5;
    public static final int OPT_INFO = 6;
    public static final int OPT_GO = 7;
    public static final int OPT_STRUCTURED_REPLY = 8;
    public static final int OPT_LIST_META_CONTEXT = 9;
    public static final int OPT_SET_META_CONTEXT = 10;

    /** QEMU's nbd_opt_lookup() names, used in error texts ({@code Unsupported option 99 (<unknown>)}). */
    public static String optionName(int option) {
        return switch (option) {
            case OPT_EXPORT_NAME -> "export name";
            case OPT_ABORT -> "abort";
            case OPT_LIST -> "list";
            case 4 -> "peek export";
            case OPT_STARTTLS -> "starttls";
            case OPT_INFO -> "info";
            case OPT_GO -> "go";
            case OPT_STRUCTURED_REPLY -> "structured reply";
            case OPT_LIST_META_CONTEXT -> "list meta context";
            case OPT_SET_META_CONTEXT -> "set meta context";
            default -> "<unknown>";
        };
    }

    // ---- option reply types -----------------------------------------------------------------
    public static final int REP_ACK = 1;
    public static final int REP_SERVER = 2;
    public static final int REP_INFO = 3;
    public static final int REP_META_CONTEXT = 4;
    public static final int REP_ERR_UNSUP = 0x80000001;
    public static final int REP_ERR_POLICY = 0x80000002;
    public static final int REP_ERR_INVALID = 0x80000003;
    public static final int REP_ERR_PLATFORM = 0x80000004;
    public static final int REP_ERR_TLS_REQD = 0x80000005;
    public static final int REP_ERR_UNKNOWN = 0x80000006;
    public static final int REP_ERR_SHUTDOWN = 0x80000007;
    public static final int REP_ERR_BLOCK_SIZE_REQD = 0x80000008;
    public static final int REP_ERR_TOO_BIG = 0x80000009;

    /** NBD_REP_INFO item types. */
    public static final int INFO_EXPORT = 0;
    public static final int INFO_NAME = 1;
    public static final int INFO_DESCRIPTION = 2;
    public static final int INFO_BLOCK_SIZE = 3;

    // ---- transmission flags (u16) -----------------------------------------------------------
    public static final int FLAG_HAS_FLAGS = 1;
    public static final int FLAG_READ_ONLY = 1 << 1;
    public static final int FLAG_SEND_FLUSH = 1 << 2;
    public static final int FLAG_SEND_FUA = 1 << 3;
    public static final int FLAG_ROTATIONAL = 1 << 4;
    public static final int FLAG_SEND_TRIM = 1 << 5;
    public static final int FLAG_SEND_WRITE_ZEROES = 1 << 6;
    public static final int FLAG_SEND_DF = 1 << 7;
    public static final int FLAG_CAN_MULTI_CONN = 1 << 8;
    public static final int FLAG_SEND_RESIZE = 1 << 9;
    public static final int FLAG_SEND_CACHE = 1 << 10;
    public static final int FLAG_SEND_FAST_ZERO = 1 << 11;

    // ---- requests ---------------------------------------------------------------------------
    public static final int REQUEST_MAGIC = 0x25609513;
    public static final int CMD_READ = 0;
    public static final int CMD_WRITE = 1;
    public static final int CMD_DISC = 2;
    public static final int CMD_FLUSH = 3;
    public static final int CMD_TRIM = 4;
    public static final int CMD_CACHE = 5;
    public static final int CMD_WRITE_ZEROES = 6;
    public static final int CMD_BLOCK_STATUS = 7;

    /** QEMU's nbd_cmd_lookup() names, for error texts. */
    public static String commandName(int type) {
        return switch (type) {
            case CMD_READ -> "read";
            case CMD_WRITE -> "write";
            case CMD_DISC -> "disconnect";
            case CMD_FLUSH -> "flush";
            case CMD_TRIM -> "trim";
            case CMD_CACHE -> "cache";
            case CMD_WRITE_ZEROES -> "write zeroes";
            case CMD_BLOCK_STATUS -> "block status";
            default -> "<unknown>";
        };
    }

    public static final int CMD_FLAG_FUA = 1;
    public static final int CMD_FLAG_NO_HOLE = 1 << 1;
    public static final int CMD_FLAG_DF = 1 << 2;
    public static final int CMD_FLAG_REQ_ONE = 1 << 3;
    public static final int CMD_FLAG_FAST_ZERO = 1 << 4;

    // ---- replies ----------------------------------------------------------------------------
    public static final int SIMPLE_REPLY_MAGIC = 0x67446698;
    public static final int STRUCTURED_REPLY_MAGIC = 0x668e33ef;
    public static final int REPLY_FLAG_DONE = 1;
    public static final int REPLY_TYPE_NONE = 0;
    public static final int REPLY_TYPE_OFFSET_DATA = 1;
    public static final int REPLY_TYPE_OFFSET_HOLE = 2;
    public static final int REPLY_TYPE_BLOCK_STATUS = 5;
    public static final int REPLY_TYPE_ERROR = 0x8001;
    public static final int REPLY_TYPE_ERROR_OFFSET = 0x8002;

    /** base:allocation flags. */
    public static final int STATE_HOLE = 1;
    public static final int STATE_ZERO = 2;
    /** qemu:dirty-bitmap:NAME flag: the range is dirty in the bitmap (QEMU's NBD_STATE_DIRTY). */
    public static final int STATE_DIRTY = 1;

    public static final String BASE_ALLOCATION = "base:allocation";

    // ---- limits -----------------------------------------------------------------------------
    /** Largest READ/WRITE payload, as QEMU's NBD_MAX_BUFFER_SIZE (32 MiB). */
    public static final int MAX_BUFFER_SIZE = 32 * 1024 * 1024;
    /** Longest string (export name, description, query) proto.md allows. */
    public static final int MAX_STRING_SIZE = 4096;
    /** Longest option payload we read; anything longer ends the connection (QEMU does the same). */
    public static final int MAX_OPTION_LENGTH = MAX_STRING_SIZE * 4 + 64;
}
