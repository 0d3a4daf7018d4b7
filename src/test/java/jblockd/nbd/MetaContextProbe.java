package jblockd.nbd;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * A bare NBD client for meta contexts (NetworkBlockDevice/nbd doc/proto.md): structured replies,
 * LIST_/SET_META_CONTEXT with any queries, GO, and BLOCK_STATUS whose reply chunks are returned
 * as they came, so a test can compare what two servers send byte for byte (as text). Everything
 * is rendered as strings: {@code ctx 4 qemu:dirty-bitmap:b1}, {@code err 0x80000003 text},
 * {@code chunk flags=0 ctx=0 [65536:0, ...]}. One thread at a time.
 */
public final class MetaContextProbe implements AutoCloseable {
    private static final long IHAVEOPT = 0x49484156454F5054L;
    private static final int OPT_GO = 7;
    private static final int OPT_STRUCTURED_REPLY = 8;
    public static final int OPT_LIST_META_CONTEXT = 9;
    public static final int OPT_SET_META_CONTEXT = 10;
    public static final int CMD_FLAG_REQ_ONE = 8;

    private final SocketChannel ch;
    private final DataInputStream in;
    private final DataOutputStream out;
    private long handle = 1;

    public MetaContextProbe(Path socket) throws IOException {
        ch = SocketChannel.open(StandardProtocolFamily.UNIX);
        ch.connect(UnixDomainSocketAddress.of(socket));
        in = new DataInputStream(Channels.newInputStream(ch));
        out = new DataOutputStream(new java.io.BufferedOutputStream(Channels.newOutputStream(ch)));
        in.readLong(); // NBDMAGIC
        in.readLong(); // IHAVEOPT
        in.readUnsignedShort();
        out.writeInt(1 | 2);
        out.flush();
    }

    /** NBD_OPT_STRUCTURED_REPLY; returns the replies. */
    public List<String> structured() throws IOException {
        sendOption(OPT_STRUCTURED_REPLY, new byte[0]);
        return replies();
    }

    /** LIST_ or SET_META_CONTEXT on {@code export} with {@code queries}; returns the replies. */
    public List<String> metaContext(int option, String export, String... queries) throws IOException {
        java.io.ByteArrayOutputStream b = new java.io.ByteArrayOutputStream();
        DataOutputStream d = new DataOutputStream(b);
        byte[] name = export.getBytes(StandardCharsets.UTF_8);
        d.writeInt(name.length);
        d.write(name);
        d.writeInt(queries.length);
        for (String q : queries) {
            byte[] qb = q.getBytes(StandardCharsets.UTF_8);
            d.writeInt(qb.length);
            d.write(qb);
        }
        sendOption(option, b.toByteArray());
        return replies();
    }

    /** NBD_OPT_GO on {@code export}, no info requests; returns the replies (INFO ones as their type). */
    public List<String> go(String export) throws IOException {
        byte[] name = export.getBytes(StandardCharsets.UTF_8);
        java.io.ByteArrayOutputStream b = new java.io.ByteArrayOutputStream();
        DataOutputStream d = new DataOutputStream(b);
        d.writeInt(name.length);
        d.write(name);
        d.writeShort(0);
        sendOption(OPT_GO, b.toByteArray());
        return replies();
    }

    private void sendOption(int option, byte[] data) throws IOException {
        out.writeLong(IHAVEOPT);
        out.writeInt(option);
        out.writeInt(data.length);
        out.write(data);
        out.flush();
    }

    /** Option replies up to ACK or an error. */
    private List<String> replies() throws IOException {
        List<String> r = new ArrayList<>();
        while (true) {
            in.readLong(); // magic
            in.readInt(); // option
            int type = in.readInt();
            int len = in.readInt();
            byte[] p = new byte[len];
            in.readFully(p);
            switch (type) {
                case 1 -> {
                    r.add("ack");
                    return r;
                }
                case 3 -> r.add("info " + (((p[0] & 0xff) << 8) | (p[1] & 0xff)));
                case 4 -> {
                    int id = ((p[0] & 0xff) << 24) | ((p[1] & 0xff) << 16) | ((p[2] & 0xff) << 8) | (p[3] & 0xff);
                    r.add("ctx " + id + " " + new String(p, 4, len - 4, StandardCharsets.UTF_8));
                }
                default -> {
                    r.add("err 0x" + Integer.toHexString(type) + " " + new String(p, StandardCharsets.UTF_8));
                    if (type < 0) {
                        return r;
                    }
                }
            }
        }
    }

    /** NBD_CMD_BLOCK_STATUS; returns every chunk of the reply up to the one flagged DONE. */
    public List<String> blockStatus(long offset, long length, int flags) throws IOException {
        long h = handle++;
        out.writeInt(0x25609513);
        out.writeShort(flags);
        out.writeShort(7);
        out.writeLong(h);
        out.writeLong(offset);
        out.writeInt((int) length);
        out.flush();
        List<String> chunks = new ArrayList<>();
        while (true) {
            int magic = in.readInt();
            if (magic != 0x668e33ef) {
                throw new IOException("not a structured reply: 0x" + Integer.toHexString(magic));
            }
            int cflags = in.readUnsignedShort();
            int type = in.readUnsignedShort();
            in.readLong(); // handle
            int len = in.readInt();
            StringBuilder s = new StringBuilder("chunk flags=" + cflags);
            if (type == 5) {
                s.append(" ctx=").append(in.readInt()).append(" [");
                for (int i = 0; i < (len - 4) / 8; i++) {
                    s.append(i == 0 ? "" : ", ").append(Integer.toUnsignedString(in.readInt())).append(':')
                            .append(in.readInt());
                }
                s.append(']');
            } else if (type == 0x8001) {
                int err = in.readInt();
                int mlen = in.readUnsignedShort();
                byte[] m = new byte[mlen];
                in.readFully(m);
                s.append(" error=").append(err).append(' ').append(new String(m, StandardCharsets.UTF_8));
            } else {
                in.skipNBytes(len);
                s.append(" type=").append(type);
            }
            chunks.add(s.toString());
            if ((cflags & 1) != 0) {
                return chunks;
            }
        }
    }

    @Override
    public void close() throws IOException {
        try {
            out.writeInt(0x25609513);
            out.writeShort(0);
            out.writeShort(2); // DISC
            out.writeLong(0);
            out.writeLong(0);
            out.writeInt(0);
            out.flush();
        } catch (IOException ignored) {
            // the server may have gone
        }
        ch.close();
    }
}
