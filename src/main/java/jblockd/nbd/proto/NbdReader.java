package jblockd.nbd.proto;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.ReadableByteChannel;

/**
 * Reads handshake options and transmission requests from a blocking channel. Headers come out
 * of a small buffer so a request costs one system call most of the time; large payloads are
 * read straight into the caller's buffer. Every length is checked before a buffer is made.
 * Owned by one thread (the connection's reader).
 */
public final class NbdReader {
    private final ReadableByteChannel channel;
    /** Buffered bytes are between position and limit (read mode). */
    private final ByteBuffer buf;
    /**
     * Read the next header exactly, not a buffer-full: set after a large WRITE, since what
     * follows a header is then most likely another large payload, and bytes of it pulled into
     * {@link #buf} would be copied a second time (a quarter of a 256 KiB request).
     */
    private boolean exactHeaders;

    /** A WRITE payload this large is read straight into its buffer, header reads stay exact. */
    private static final int LARGE_PAYLOAD = 32 * 1024;

    public NbdReader(ReadableByteChannel channel) {
        this.channel = channel;
        this.buf = ByteBuffer.allocateDirect(64 * 1024);
        buf.limit(0);
    }

    /** Makes at least {@code n} (<= capacity) bytes available in {@link #buf}. */
    private void need(int n) throws IOException {
        if (buf.remaining() >= n) {
            return;
        }
        buf.compact();
        if (exactHeaders) {
            buf.limit(n);
        }
        try {
            while (buf.position() < n) {
                if (channel.read(buf) < 0) {
                    throw new EOFException("connection closed by peer");
                }
            }
        } finally {
            buf.flip();
        }
    }

    public int readInt() throws IOException {
        need(4);
        return buf.getInt();
    }

    public int readUnsignedShort() throws IOException {
        need(2);
        return Short.toUnsignedInt(buf.getShort());
    }

    public long readLong() throws IOException {
        need(8);
        return buf.getLong();
    }

    /** Fills {@code dst} completely: buffered bytes first, then directly from the channel. */
    public void readFully(ByteBuffer dst) throws IOException {
        if (buf.hasRemaining()) {
            int n = Math.min(buf.remaining(), dst.remaining());
            ByteBuffer slice = buf.slice(buf.position(), n);
            dst.put(slice);
            buf.position(buf.position() + n);
        }
        while (dst.hasRemaining()) {
            if (dst.remaining() < 4096) {
                // small tail: refill the buffer, which may also pick up the next header
                need(Math.min(dst.remaining(), buf.capacity()));
                int n = Math.min(buf.remaining(), dst.remaining());
                dst.put(buf.slice(buf.position(), n));
                buf.position(buf.position() + n);
            } else if (channel.read(dst) < 0) {
                throw new EOFException("connection closed by peer");
            }
        }
    }

    /** Discards {@code n} bytes (a payload we refuse). */
    public void skip(long n) throws IOException {
        ByteBuffer sink = ByteBuffer.allocate((int) Math.min(n, 64 * 1024));
        long left = n;
        while (left > 0) {
            sink.clear().limit((int) Math.min(left, sink.capacity()));
            readFully(sink);
            left -= sink.limit();
        }
    }

    /**
     * Whether bytes beyond what was asked for are buffered: after STARTTLS's reply nothing may be,
     * since the peer's next bytes belong to the TLS handshake on another reader.
     */
    public boolean hasBuffered() {
        return buf.hasRemaining();
    }

    /** The client's u32 flags after the server greeting. */
    public int readClientFlags() throws IOException {
        return readInt();
    }

    /**
     * The next option request. Bad magic or a payload longer than {@link Nbd#MAX_OPTION_LENGTH}
     * is a protocol violation.
     */
    public NbdOption readOption() throws IOException {
        long magic = readLong();
        if (magic != Nbd.IHAVEOPT) {
            throw new NbdProtocolException("Bad option magic received: 0x" + Long.toHexString(magic));
        }
        int option = readInt();
        long length = Integer.toUnsignedLong(readInt());
        if (length > Nbd.MAX_OPTION_LENGTH) {
            throw new NbdProtocolException("len (" + length + ") is larger than max len ("
                    + Nbd.MAX_OPTION_LENGTH + ")");
        }
        ByteBuffer data = ByteBuffer.allocate((int) length);
        readFully(data);
        data.flip();
        return new NbdOption(option, data.asReadOnlyBuffer());
    }

    /** The next request header (no payload). Bad magic is a protocol violation. */
    public NbdRequest readRequest() throws IOException {
        need(NbdRequest.HEADER_SIZE);
        int magic = buf.getInt();
        if (magic != Nbd.REQUEST_MAGIC) {
            throw new NbdProtocolException("invalid magic (got 0x" + Integer.toHexString(magic) + ")");
        }
        int flags = Short.toUnsignedInt(buf.getShort());
        int type = Short.toUnsignedInt(buf.getShort());
        long handle = buf.getLong();
        long offset = buf.getLong();
        long length = Integer.toUnsignedLong(buf.getInt());
        exactHeaders = type == Nbd.CMD_WRITE && length >= LARGE_PAYLOAD;
        return new NbdRequest(flags, type, handle, offset, length);
    }
}
