package jblockd.nbd.proto;

/**
 * One transmission-phase request header.
 * <pre>
 *  0               4       6       8                      16                      24      28
 *  +---------------+-------+-------+-----------------------+-----------------------+-------+
 *  | 0x25609513    | flags | type  | handle (u64)          | offset (u64)          | length|
 *  +---------------+-------+-------+-----------------------+-----------------------+-------+
 *  then {@code length} bytes of payload for CMD_WRITE only.
 * </pre>
 * {@code length} is unsigned on the wire and kept as a long here.
 */
public record NbdRequest(int flags, int type, long handle, long offset, long length) {
    public static final int HEADER_SIZE = 28;

    public boolean has(int flag) {
        return (flags & flag) != 0;
    }
}
