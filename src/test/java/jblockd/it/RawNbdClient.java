package jblockd.it;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

/**
 * A deliberately bare NBD client over a UNIX socket (fixed newstyle, NBD_OPT_EXPORT_NAME, simple
 * replies; NBD doc/proto.md) so tests can misbehave on purpose: send a header and half a
 * payload, pipeline without reading replies, vanish mid-request. One thread at a time.
 */
final class RawNbdClient implements AutoCloseable {
    static final int CMD_READ = 0;
    static final int CMD_WRITE = 1;
    static final int CMD_DISC = 2;
    static final int CMD_FLUSH = 3;
    static final int FLAG_FUA = 1;

    private final SocketChannel ch;
    final DataInputStream in;
    final DataOutputStream out;
    final long size;

    /** A failed request: the server's NBD error code (an errno). */
    static final class NbdErrorReply extends IOException {
        final int code;

        NbdErrorReply(int code) {
            super("NBD error " + code);
            this.code = code;
        }
    }

    RawNbdClient(Path socket, String export) throws IOException {
        ch = SocketChannel.open(StandardProtocolFamily.UNIX);
        ch.connect(UnixDomainSocketAddress.of(socket));
        in = new DataInputStream(Channels.newInputStream(ch));
        out = new DataOutputStream(new java.io.BufferedOutputStream(Channels.newOutputStream(ch), 1 << 16));
        if (in.readLong() != 0x4e42444d41474943L || in.readLong() != 0x49484156454F5054L) {
            throw new IOException("not an NBD newstyle server");
        }
        in.readUnsignedShort(); // handshake flags
        out.writeInt(1 | 2); // FIXED_NEWSTYLE | NO_ZEROES
        byte[] name = export.getBytes(StandardCharsets.UTF_8);
        out.writeLong(0x49484156454F5054L);
        out.writeInt(1); // NBD_OPT_EXPORT_NAME
        out.writeInt(name.length);
        out.write(name);
        out.flush();
        size = in.readLong();
        in.readUnsignedShort(); // transmission flags
    }

    /** Sends a request header (and payload for writes) without waiting. */
    void send(int type, int flags, long handle, long offset, int length, byte[] payload) throws IOException {
        out.writeInt(0x25609513);
        out.writeShort(flags);
        out.writeShort(type);
        out.writeLong(handle);
        out.writeLong(offset);
        out.writeInt(length);
        if (payload != null) {
            out.write(payload);
        }
        out.flush();
    }

    /** Reads one simple reply header; returns the handle, throws on an error reply. */
    long reply(byte[] readInto) throws IOException {
        int magic = in.readInt();
        if (magic != 0x67446698) {
            throw new IOException("bad reply magic 0x" + Integer.toHexString(magic));
        }
        int err = in.readInt();
        long handle = in.readLong();
        if (err != 0) {
            throw new NbdErrorReply(err);
        }
        if (readInto != null) {
            in.readFully(readInto);
        }
        return handle;
    }

    void write(long offset, byte[] data, boolean fua) throws IOException {
        send(CMD_WRITE, fua ? FLAG_FUA : 0, 1, offset, data.length, data);
        reply(null);
    }

    void flush() throws IOException {
        send(CMD_FLUSH, 0, 2, 0, 0, null);
        reply(null);
    }

    byte[] read(long offset, int length) throws IOException {
        send(CMD_READ, 0, 3, offset, length, null);
        byte[] b = new byte[length];
        reply(b);
        return b;
    }

    /** Closes the socket without NBD_CMD_DISC (an abrupt client). */
    @Override
    public void close() throws IOException {
        ch.close();
    }
}
