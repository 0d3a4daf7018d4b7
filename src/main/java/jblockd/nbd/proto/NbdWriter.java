package jblockd.nbd.proto;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.channels.GatheringByteChannel;
import java.util.concurrent.locks.ReentrantLock;

/**
 * Writes handshake and transmission messages to a blocking channel. Thread-safe: one lock per
 * connection keeps each message (header plus payload) contiguous, so request handlers running
 * concurrently can reply as each finishes, out of order, identified by handle.
 */
public final class NbdWriter {
    private final GatheringByteChannel channel;
    private final ReentrantLock lock = new ReentrantLock();

    public NbdWriter(GatheringByteChannel channel) {
        this.channel = channel;
    }

    private void writeAll(ByteBuffer... parts) throws IOException {
        lock.lock();
        try {
            long left = 0;
            for (ByteBuffer b : parts) {
                left += b.remaining();
            }
            while (left > 0) {
                left -= channel.write(parts);
            }
        } finally {
            lock.unlock();
        }
    }

    private static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    /**
     * Server greeting.
     * <pre>
     *  +--------------------+--------------------+--------------+
     *  | "NBDMAGIC" (u64)   | "IHAVEOPT" (u64)   | flags (u16)  |
     *  +--------------------+--------------------+--------------+
     * </pre>
     */
    public void greeting(int handshakeFlags) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(18);
        b.putLong(Nbd.NBDMAGIC).putLong(Nbd.IHAVEOPT).putShort((short) handshakeFlags).flip();
        writeAll(b);
    }

    /**
     * Option reply.
     * <pre>
     *  +---------------------------+-------------+-----------+-------------+--------------+
     *  | 0x0003e889045565a9 (u64)  | option (u32)| type (u32)| length (u32)| data[length] |
     *  +---------------------------+-------------+-----------+-------------+--------------+
     * </pre>
     */
    public void optionReply(int option, int type, ByteBuffer data) throws IOException {
        ByteBuffer h = ByteBuffer.allocate(20);
        h.putLong(Nbd.OPT_REPLY_MAGIC).putInt(option).putInt(type).putInt(data == null ? 0 : data.remaining()).flip();
        if (data == null) {
            writeAll(h);
        } else {
            writeAll(h, data);
        }
    }

    public void optionAck(int option) throws IOException {
        optionReply(option, Nbd.REP_ACK, null);
    }

    /** An error reply: the payload is a human-readable message. */
    public void optionError(int option, int errorType, String message) throws IOException {
        optionReply(option, errorType, ByteBuffer.wrap(utf8(message)));
    }

    /** REP_SERVER for LIST: u32 name length, name, description (may be empty). */
    public void optionServer(int option, String name, String description) throws IOException {
        byte[] n = utf8(name);
        byte[] d = description == null ? new byte[0] : utf8(description);
        ByteBuffer b = ByteBuffer.allocate(4 + n.length + d.length);
        b.putInt(n.length).put(n).put(d).flip();
        optionReply(option, Nbd.REP_SERVER, b);
    }

    /** REP_INFO NBD_INFO_EXPORT: u16 type 0, u64 size, u16 transmission flags. */
    public void infoExport(int option, long size, int transmissionFlags) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(12);
        b.putShort((short) Nbd.INFO_EXPORT).putLong(size).putShort((short) transmissionFlags).flip();
        optionReply(option, Nbd.REP_INFO, b);
    }

    /** REP_INFO NBD_INFO_NAME (1) or NBD_INFO_DESCRIPTION (2): u16 type, string. */
    public void infoString(int option, int infoType, String text) throws IOException {
        byte[] t = utf8(text);
        ByteBuffer b = ByteBuffer.allocate(2 + t.length);
        b.putShort((short) infoType).put(t).flip();
        optionReply(option, Nbd.REP_INFO, b);
    }

    /** REP_INFO NBD_INFO_BLOCK_SIZE: u16 type 3, u32 minimum, u32 preferred, u32 maximum. */
    public void infoBlockSize(int option, int min, int preferred, int max) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(14);
        b.putShort((short) Nbd.INFO_BLOCK_SIZE).putInt(min).putInt(preferred).putInt(max).flip();
        optionReply(option, Nbd.REP_INFO, b);
    }

    /** REP_META_CONTEXT: u32 context id, name. */
    public void metaContext(int option, int id, String name) throws IOException {
        byte[] n = utf8(name);
        ByteBuffer b = ByteBuffer.allocate(4 + n.length);
        b.putInt(id).put(n).flip();
        optionReply(option, Nbd.REP_META_CONTEXT, b);
    }

    /** The reply to NBD_OPT_EXPORT_NAME: u64 size, u16 flags, 124 zero bytes unless NO_ZEROES. */
    public void exportNameReply(long size, int transmissionFlags, boolean noZeroes) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(10 + (noZeroes ? 0 : 124));
        b.putLong(size).putShort((short) transmissionFlags).position(b.limit()).flip();
        writeAll(b);
    }

    /**
     * Simple reply, followed by {@code data} for a successful READ.
     * <pre>
     *  +------------------+--------------+----------------+---------------+
     *  | 0x67446698 (u32) | error (u32)  | handle (u64)   | data (READ)   |
     *  +------------------+--------------+----------------+---------------+
     * </pre>
     */
    public void simpleReply(long handle, int error, ByteBuffer data) throws IOException {
        ByteBuffer h = ByteBuffer.allocate(16);
        h.putInt(Nbd.SIMPLE_REPLY_MAGIC).putInt(error).putLong(handle).flip();
        if (data == null) {
            writeAll(h);
        } else {
            writeAll(h, data);
        }
    }

    /**
     * Structured reply chunk header.
     * <pre>
     *  +------------------+-------------+------------+--------------+-------------+----------+
     *  | 0x668e33ef (u32) | flags (u16) | type (u16) | handle (u64) | length (u32)| payload  |
     *  +------------------+-------------+------------+--------------+-------------+----------+
     * </pre>
     */
    private static ByteBuffer chunkHeader(int flags, int type, long handle, long length, int extra) {
        ByteBuffer h = ByteBuffer.allocate(20 + extra);
        h.putInt(Nbd.STRUCTURED_REPLY_MAGIC).putShort((short) flags).putShort((short) type)
                .putLong(handle).putInt((int) length);
        return h;
    }

    /** NBD_REPLY_TYPE_NONE with DONE: the end of a structured reply. */
    public void chunkNone(long handle) throws IOException {
        writeAll(chunkHeader(Nbd.REPLY_FLAG_DONE, Nbd.REPLY_TYPE_NONE, handle, 0, 0).flip());
    }

    /** OFFSET_DATA: u64 offset, then the data. */
    public void chunkData(long handle, long offset, ByteBuffer data, boolean done) throws IOException {
        ByteBuffer h = chunkHeader(done ? Nbd.REPLY_FLAG_DONE : 0, Nbd.REPLY_TYPE_OFFSET_DATA, handle,
                8L + data.remaining(), 8);
        h.putLong(offset).flip();
        writeAll(h, data);
    }

    /** OFFSET_HOLE: u64 offset, u32 hole size. */
    public void chunkHole(long handle, long offset, int length, boolean done) throws IOException {
        ByteBuffer h = chunkHeader(done ? Nbd.REPLY_FLAG_DONE : 0, Nbd.REPLY_TYPE_OFFSET_HOLE, handle, 12, 12);
        h.putLong(offset).putInt(length).flip();
        writeAll(h);
    }

    /** ERROR (always final here): u32 error, u16 message length, message. */
    public void chunkError(long handle, NbdError error, String message) throws IOException {
        byte[] m = utf8(message == null ? "" : message);
        int len = Math.min(m.length, Nbd.MAX_STRING_SIZE);
        ByteBuffer h = chunkHeader(Nbd.REPLY_FLAG_DONE, Nbd.REPLY_TYPE_ERROR, handle, 6 + len, 6 + len);
        h.putInt(error.code()).putShort((short) len).put(m, 0, len).flip();
        writeAll(h);
    }

    /**
     * BLOCK_STATUS: u32 context id, then {u32 length, u32 flags} per extent.
     * {@code extents} holds length/flags pairs.
     */
    public void chunkBlockStatus(long handle, int contextId, int[] extents, int count, boolean done)
            throws IOException {
        ByteBuffer h = chunkHeader(done ? Nbd.REPLY_FLAG_DONE : 0, Nbd.REPLY_TYPE_BLOCK_STATUS, handle,
                4L + 8L * count, 4 + 8 * count);
        h.putInt(contextId);
        for (int i = 0; i < count; i++) {
            h.putInt(extents[2 * i]).putInt(extents[2 * i + 1]);
        }
        writeAll(h.flip());
    }
}
