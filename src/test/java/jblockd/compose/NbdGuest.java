package jblockd.compose;

import java.io.BufferedOutputStream;
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
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * A guest of the composition test: an NBD client over a UNIX socket written from
 * NetworkBlockDevice/nbd doc/proto.md alone (no production code), so a bug in jblockd's NBD
 * classes cannot hide itself here. It negotiates with NBD_OPT_GO and either
 * <em>structured replies</em> plus the {@code base:allocation} meta context (what qemu-io, qemu-img
 * and nbdcopy do: sparse reads, BLOCK_STATUS) or plain <em>simple replies</em> (what the Linux
 * kernel client does).
 * <p>
 * {@link #submit} pipelines a batch of requests (a sender thread writes them all while the caller
 * reads the replies, matched by handle, in whatever order the server sends them) and returns one
 * {@link Reply} per request. A structured READ reply is checked as proto.md demands: its chunks
 * cover the request exactly once. Not thread-safe: one batch at a time.
 */
final class NbdGuest implements AutoCloseable {
    private static final long NBDMAGIC = 0x4e42444d41474943L;
    private static final long IHAVEOPT = 0x49484156454F5054L;
    private static final long OPT_REPLY_MAGIC = 0x0003e889045565a9L;
    private static final int OPT_GO = 7;
    private static final int OPT_STRUCTURED_REPLY = 8;
    private static final int OPT_SET_META_CONTEXT = 10;
    private static final int REP_ACK = 1;
    private static final int REP_INFO = 3;
    private static final int REP_META_CONTEXT = 4;

    private static final int REQUEST_MAGIC = 0x25609513;
    private static final int SIMPLE_REPLY_MAGIC = 0x67446698;
    private static final int STRUCTURED_REPLY_MAGIC = 0x668e33ef;
    static final int CMD_READ = 0;
    static final int CMD_WRITE = 1;
    static final int CMD_DISC = 2;
    static final int CMD_FLUSH = 3;
    static final int CMD_TRIM = 4;
    static final int CMD_WRITE_ZEROES = 6;
    static final int CMD_BLOCK_STATUS = 7;
    static final int FLAG_FUA = 1;
    static final int FLAG_NO_HOLE = 1 << 1;
    static final int FLAG_FAST_ZERO = 1 << 4;
    private static final int REPLY_FLAG_DONE = 1;
    private static final int CHUNK_NONE = 0;
    private static final int CHUNK_OFFSET_DATA = 1;
    private static final int CHUNK_OFFSET_HOLE = 2;
    private static final int CHUNK_BLOCK_STATUS = 5;
    private static final int CHUNK_ERROR = 0x8001;
    private static final int CHUNK_ERROR_OFFSET = 0x8002;
    /** base:allocation extent flags. */
    static final int STATE_HOLE = 1;
    static final int STATE_ZERO = 2;

    /** One request of a batch. {@code payload} only for WRITE. */
    record Request(int type, int flags, long offset, int length, byte[] payload) {
    }

    /**
     * The answer to one request: {@code error} 0 on success (else an errno), {@code data} for a
     * READ (holes filled with zeroes), {@code extents} for BLOCK_STATUS as (length, flags) pairs.
     */
    record Reply(int error, byte[] data, List<long[]> extents) {
    }

    /** "label:export", for messages and thread names. */
    private final String name;
    private final String label;
    private final boolean structured;
    private final SocketChannel channel;
    private final DataInputStream in;
    private final DataOutputStream out;
    private final long size;
    private int metaContextId = -1;
    private long nextHandle = 1;

    private NbdGuest(String label, String export, boolean structured, SocketChannel channel) throws IOException {
        this.name = label + ":" + export;
        this.label = label;
        this.structured = structured;
        this.channel = channel;
        this.in = new DataInputStream(Channels.newInputStream(channel));
        this.out = new DataOutputStream(new BufferedOutputStream(Channels.newOutputStream(channel), 1 << 16));
        this.size = handshake(export);
    }

    /** Connects to {@code export} at {@code socket}; {@code label} names the guest in messages. */
    static NbdGuest connect(Path socket, String export, boolean structured, String label) throws IOException {
        SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
        try {
            ch.connect(UnixDomainSocketAddress.of(socket));
            return new NbdGuest(label, export, structured, ch);
        } catch (IOException | RuntimeException e) {
            ch.close();
            throw e;
        }
    }

    boolean structured() {
        return structured;
    }

    long size() {
        return size;
    }

    String label() {
        return label;
    }

    // ==== handshake (proto.md "Fixed newstyle negotiation") ====================================

    private long handshake(String export) throws IOException {
        if (in.readLong() != NBDMAGIC || in.readLong() != IHAVEOPT) {
            throw new IOException("not an NBD newstyle server");
        }
        in.readUnsignedShort(); // handshake flags
        out.writeInt(1 | 2); // FIXED_NEWSTYLE | NO_ZEROES
        byte[] exportName = export.getBytes(StandardCharsets.UTF_8);
        if (structured) {
            option(OPT_STRUCTURED_REPLY, new byte[0]);
            expectAck(OPT_STRUCTURED_REPLY);
            byte[] ctx = "base:allocation".getBytes(StandardCharsets.UTF_8);
            java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(4 + exportName.length + 4 + 4 + ctx.length);
            b.putInt(exportName.length).put(exportName).putInt(1).putInt(ctx.length).put(ctx);
            option(OPT_SET_META_CONTEXT, b.array());
            while (true) {
                OptionReply r = optionReply(OPT_SET_META_CONTEXT);
                if (r.type == REP_ACK) {
                    break;
                }
                if (r.type != REP_META_CONTEXT) {
                    throw new IOException("SET_META_CONTEXT: reply type 0x" + Integer.toHexString(r.type));
                }
                metaContextId = java.nio.ByteBuffer.wrap(r.data).getInt();
            }
            if (metaContextId < 0) {
                throw new IOException("server did not select base:allocation");
            }
        }
        java.nio.ByteBuffer go = java.nio.ByteBuffer.allocate(4 + exportName.length + 2);
        go.putInt(exportName.length).put(exportName).putShort((short) 0);
        option(OPT_GO, go.array());
        long exportSize = -1;
        while (true) {
            OptionReply r = optionReply(OPT_GO);
            if (r.type == REP_ACK) {
                break;
            }
            if (r.type != REP_INFO) {
                throw new IOException("GO: reply type 0x" + Integer.toHexString(r.type) + " "
                        + new String(r.data, StandardCharsets.UTF_8));
            }
            java.nio.ByteBuffer d = java.nio.ByteBuffer.wrap(r.data);
            if (d.getShort() == 0) { // NBD_INFO_EXPORT: u64 size, u16 transmission flags
                exportSize = d.getLong();
            }
        }
        if (exportSize < 0) {
            throw new IOException("GO: no NBD_INFO_EXPORT");
        }
        return exportSize;
    }

    private record OptionReply(int type, byte[] data) {
    }

    private void option(int option, byte[] data) throws IOException {
        out.writeLong(IHAVEOPT);
        out.writeInt(option);
        out.writeInt(data.length);
        out.write(data);
        out.flush();
    }

    private OptionReply optionReply(int option) throws IOException {
        if (in.readLong() != OPT_REPLY_MAGIC) {
            throw new IOException("bad option reply magic");
        }
        int opt = in.readInt();
        int type = in.readInt();
        int len = in.readInt();
        if (opt != option || len < 0 || len > (1 << 20)) {
            throw new IOException("option reply for " + opt + " (asked " + option + "), length " + len);
        }
        byte[] data = new byte[len];
        in.readFully(data);
        return new OptionReply(type, data);
    }

    private void expectAck(int option) throws IOException {
        OptionReply r = optionReply(option);
        if (r.type != REP_ACK) {
            throw new IOException("option " + option + " refused: 0x" + Integer.toHexString(r.type));
        }
    }

    // ==== transmission ==========================================================================

    /**
     * Sends every request (from a sender thread, so the server never blocks on replies we are
     * not reading) and returns the replies in request order. {@code onFirstReply} is set as soon
     * as any reply header has arrived (the stop/cont step uses it to see whether the server
     * answered while guest I/O was meant to be held); {@code sent} is counted down once every
     * request is on the wire.
     */
    List<Reply> submit(List<Request> requests, AtomicBoolean onFirstReply, CountDownLatch sent) throws IOException {
        Map<Long, Integer> index = new HashMap<>();
        long[] handles = new long[requests.size()];
        for (int i = 0; i < requests.size(); i++) {
            handles[i] = nextHandle++;
            index.put(handles[i], i);
        }
        IOException[] sendFailure = new IOException[1];
        Thread sender = Thread.ofVirtual().name("nbd-guest-send-" + name).start(() -> {
            try {
                for (int i = 0; i < requests.size(); i++) {
                    send(handles[i], requests.get(i));
                }
                out.flush();
            } catch (IOException e) {
                sendFailure[0] = e;
            } finally {
                sent.countDown();
            }
        });
        Reply[] replies = new Reply[requests.size()];
        ReadAssembly[] reads = new ReadAssembly[requests.size()];
        List<List<long[]>> extents = new ArrayList<>();
        for (int i = 0; i < requests.size(); i++) {
            extents.add(null);
        }
        int done = 0;
        try {
            while (done < requests.size()) {
                int magic = in.readInt();
                if (onFirstReply != null) {
                    onFirstReply.set(true);
                }
                if (magic == SIMPLE_REPLY_MAGIC) {
                    int err = in.readInt();
                    int i = indexOf(index, in.readLong());
                    Request rq = requests.get(i);
                    byte[] data = null;
                    if (rq.type() == CMD_READ && err == 0) {
                        data = new byte[rq.length()];
                        in.readFully(data);
                    }
                    replies[i] = new Reply(err, data, null);
                    done++;
                } else if (magic == STRUCTURED_REPLY_MAGIC) {
                    if (!structured) {
                        throw new IOException(name + ": structured reply chunk without negotiation");
                    }
                    int flags = in.readUnsignedShort();
                    int type = in.readUnsignedShort();
                    int i = indexOf(index, in.readLong());
                    int len = in.readInt();
                    Request rq = requests.get(i);
                    chunk(rq, i, type, len, reads, extents, replies);
                    if ((flags & REPLY_FLAG_DONE) != 0) {
                        if (replies[i] == null) {
                            replies[i] = finish(rq, reads[i], extents.get(i));
                        }
                        done++;
                    }
                } else {
                    throw new IOException(name + ": bad reply magic 0x" + Integer.toHexString(magic));
                }
            }
            sender.join();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException(e);
        }
        if (sendFailure[0] != null) {
            throw sendFailure[0];
        }
        return List.of(replies);
    }

    private static int indexOf(Map<Long, Integer> index, long handle) throws IOException {
        Integer i = index.get(handle);
        if (i == null) {
            throw new IOException("reply for unknown handle " + handle);
        }
        return i;
    }

    private void send(long handle, Request r) throws IOException {
        out.writeInt(REQUEST_MAGIC);
        out.writeShort(r.flags());
        out.writeShort(r.type());
        out.writeLong(handle);
        out.writeLong(r.offset());
        out.writeInt(r.length());
        if (r.payload() != null) {
            out.write(r.payload());
        }
    }

    /** A structured READ being assembled: the data and which bytes some chunk covered. */
    private static final class ReadAssembly {
        final byte[] data;
        final java.util.BitSet covered;

        ReadAssembly(int length) {
            data = new byte[length];
            covered = new java.util.BitSet(length);
        }

        void cover(Request rq, long offset, int length) throws IOException {
            long at = offset - rq.offset();
            if (at < 0 || at + length > rq.length()) {
                throw new IOException("read chunk [" + offset + "+" + length + ") outside the request ["
                        + rq.offset() + "+" + rq.length() + ")");
            }
            if (covered.get((int) at, (int) at + length).cardinality() != 0) {
                throw new IOException("read chunks overlap at " + offset); // proto.md forbids it
            }
            covered.set((int) at, (int) at + length);
        }
    }

    private void chunk(Request rq, int i, int type, int len, ReadAssembly[] reads, List<List<long[]>> extents,
            Reply[] replies) throws IOException {
        switch (type) {
            case CHUNK_NONE -> {
                if (len != 0) {
                    throw new IOException("NONE chunk with length " + len);
                }
            }
            case CHUNK_OFFSET_DATA -> {
                ReadAssembly a = reads[i] == null ? (reads[i] = new ReadAssembly(rq.length())) : reads[i];
                long off = in.readLong();
                int n = len - 8;
                a.cover(rq, off, n);
                in.readFully(a.data, (int) (off - rq.offset()), n);
            }
            case CHUNK_OFFSET_HOLE -> {
                ReadAssembly a = reads[i] == null ? (reads[i] = new ReadAssembly(rq.length())) : reads[i];
                long off = in.readLong();
                int n = in.readInt();
                a.cover(rq, off, n); // the bytes stay zero
            }
            case CHUNK_BLOCK_STATUS -> {
                int ctx = in.readInt();
                if (ctx != metaContextId) {
                    throw new IOException("block status for context " + ctx + ", negotiated " + metaContextId);
                }
                List<long[]> l = new ArrayList<>();
                for (int k = 0; k < (len - 4) / 8; k++) {
                    l.add(new long[] {Integer.toUnsignedLong(in.readInt()), in.readInt()});
                }
                extents.set(i, l);
            }
            case CHUNK_ERROR, CHUNK_ERROR_OFFSET -> {
                int err = in.readInt();
                int msgLen = in.readUnsignedShort();
                in.readFully(new byte[msgLen]);
                if (type == CHUNK_ERROR_OFFSET) {
                    in.readLong();
                }
                if (len != 4 + 2 + msgLen + (type == CHUNK_ERROR_OFFSET ? 8 : 0)) {
                    throw new IOException("error chunk length " + len);
                }
                replies[i] = new Reply(err, null, null);
            }
            default -> throw new IOException("unknown structured reply chunk type " + type);
        }
    }

    private static Reply finish(Request rq, ReadAssembly read, List<long[]> extents) throws IOException {
        if (rq.type() == CMD_READ) {
            if (rq.length() == 0) {
                return new Reply(0, new byte[0], null);
            }
            if (read == null || read.covered.cardinality() != rq.length()) {
                throw new IOException("structured read of [" + rq.offset() + "+" + rq.length()
                        + ") ended with only " + (read == null ? 0 : read.covered.cardinality()) + " bytes covered");
            }
            return new Reply(0, read.data, null);
        }
        if (rq.type() == CMD_BLOCK_STATUS && extents == null) {
            throw new IOException("BLOCK_STATUS ended without a status chunk");
        }
        return new Reply(0, null, extents);
    }

    /** NBD_CMD_DISC, then close. */
    @Override
    public void close() throws IOException {
        try {
            send(nextHandle++, new Request(CMD_DISC, 0, 0, 0, null));
            out.flush();
        } catch (IOException ignored) {
            // the server may be gone already
        } finally {
            channel.close();
        }
    }
}
