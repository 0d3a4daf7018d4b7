package jblockd.nbd.proto;

import java.nio.ByteBuffer;

/**
 * One handshake option request.
 * <pre>
 *  +-----------------------------+-------------+-------------+------------------+
 *  | "IHAVEOPT" (u64)            | option (u32)| length (u32)| data[length]     |
 *  +-----------------------------+-------------+-------------+------------------+
 * </pre>
 * {@code data} is a read-only big-endian view of the payload.
 */
public record NbdOption(int option, ByteBuffer data) {
}
