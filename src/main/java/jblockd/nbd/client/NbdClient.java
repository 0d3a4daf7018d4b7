package jblockd.nbd.client;

import java.io.EOFException;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ByteChannel;
import java.nio.channels.SocketChannel;
import java.nio.channels.WritableByteChannel;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.ReentrantLock;

import jblockd.block.Errno;
import jblockd.block.IoError;
import jblockd.nbd.proto.Nbd;
import jblockd.nbd.proto.NbdError;
import jblockd.nbd.proto.NbdProtocolException;
import jblockd.nbd.proto.NbdReader;
import jblockd.tls.TlsChannel;
import jblockd.tls.X509Credentials;

import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLException;

/**
 * An NBD client (doc/proto.md): fixed newstyle handshake with structured replies, meta contexts
 * and {@code OPT_GO}, then requests from any number of threads with several in flight. One
 * reader thread matches replies to requests by handle; a request's caller waits for its own.
 * <p>
 * Every length the server sends is checked against what the request asked before a byte is
 * stored, so a broken or hostile server ends the connection with an {@link NbdProtocolException}
 * (every waiting request fails with EIO) and never makes the client allocate or write out of
 * bounds. An error the server reports for a request is an {@link IoError} with the errno it sent.
 */
public final class NbdClient implements AutoCloseable {
    /**
     * What to ask for: the export, the meta contexts for BLOCK_STATUS (may be empty), and TLS
     * (null: plain). Contexts the server does not offer, or all of them when it has no
     * structured replies or no meta contexts, are not selected: {@link #metaContexts()} lists
     * what was.
     */
    public record Options(String export, List<String> metaContexts, Tls tls) {
        public Options {
            metaContexts = List.copyOf(metaContexts);
        }

        public Options(String export, List<String> metaContexts) {
            this(export, metaContexts, null);
        }

        public static Options of(String export, String... contexts) {
            return new Options(export, List.of(contexts));
        }

        /** The same options, upgraded with NBD_OPT_STARTTLS before anything else. */
        public Options withTls(Tls t) {
            return new Options(export, metaContexts, t);
        }
    }

    /**
     * TLS for a connection (block/nbd.c's tls-creds and tls-hostname): client-endpoint
     * credentials, and the name the server's certificate must carry; null {@code hostname}
     * means the inet address's host (a UNIX socket has none: QEMU's "No hostname for
     * certificate validation").
     */
    public record Tls(X509Credentials credentials, String hostname) {
    }

    /** One extent of a BLOCK_STATUS chunk: its length and the context's flags. */
    public record Extent(long length, int flags) {
    }

    /**
     * The server answered an option of the handshake with an error reply: which option, the
     * reply type ({@code NBD_REP_ERR_*}) and the server's message. The exception's message is
     * QEMU 7.2's nbd/client.c nbd_handle_reply_err() text for it ({@code Requested export not
     * available}, {@code TLS negotiation required before option 7 (go)}, ...); the server's own
     * message, if any, is its cause's ({@code server reported: ...}).
     */
    public static final class OptionRefused extends IoError {
        private static final long serialVersionUID = 1L;
        private final int option;
        private final int reply;
        private final String serverMessage;

        OptionRefused(Errno errno, String detail, int option, int reply, String serverMessage) {
            super(errno, detail, serverMessage.isEmpty() ? null : new IOException("server reported: " + serverMessage));
            this.option = option;
            this.reply = reply;
            this.serverMessage = serverMessage;
        }

        public int option() {
            return option;
        }

        public int reply() {
            return reply;
        }

        public String serverMessage() {
            return serverMessage;
        }
    }

    /** The socket, or the TLS channel over it. */
    private final ByteChannel channel;
    private final NbdReader in;
    private final ReentrantLock sendLock = new ReentrantLock();
    private final long size;
    private final int transmissionFlags;
    private final boolean structured;
    private final Map<String, Integer> contexts;
    private final int minBlock;
    private final int maxBlock;
    private final AtomicLong handles = new AtomicLong(1);
    private final Map<Long, Pending> pending = new ConcurrentHashMap<>();
    private final Thread reader;
    private volatile IOException broken;
    /** Set by close(): the reader's end of stream is then ours, not the server's. */
    private volatile boolean closing;
    /** Completed (once) with the cause when the connection fails or is closed. */
    private final CompletableFuture<IOException> disconnected = new CompletableFuture<>();

    /** A request in flight: what it asked, where read data goes, extents by context id. */
    private static final class Pending {
        final int type;
        final long offset;
        final long length;
        final ByteBuffer dst;
        final Map<Integer, List<Extent>> extents = new LinkedHashMap<>();
        final CompletableFuture<Void> done = new CompletableFuture<>();
        IoError error;

        Pending(int type, long offset, long length, ByteBuffer dst) {
            this.type = type;
            this.offset = offset;
            this.length = length;
            this.dst = dst;
        }
    }

    private NbdClient(Handshake h) {
        this.channel = h.channel;
        this.in = h.in;
        this.size = h.size;
        this.transmissionFlags = h.flags;
        this.structured = h.structured;
        this.contexts = Collections.unmodifiableMap(h.contexts);
        this.minBlock = h.minBlock;
        this.maxBlock = h.maxBlock;
        this.reader = Thread.ofVirtual().name("nbd-client-replies").start(this::readReplies);
    }

    /**
     * Connects to {@code address} (UNIX or inet) and negotiates {@code options}; refusals are
     * {@link OptionRefused}, with QEMU's texts.
     */
    public static NbdClient connect(SocketAddress address, Options options) throws IOException {
        checkTls(options, address);
        return negotiate(SocketChannel.open(address), options);
    }

    /**
     * Negotiates {@code options} over a channel the caller connected (its own address
     * resolution, socket options and error texts); the channel is closed if negotiation fails.
     * With TLS, the certificate is checked against {@link Tls#hostname()}, else the inet host.
     */
    public static NbdClient negotiate(SocketChannel ch, Options options) throws IOException {
        Handshake h = new Handshake(ch);
        try {
            if (options.tls() != null) {
                SocketAddress remote = ch.getRemoteAddress();
                String hostname = checkTls(options, remote);
                int port = remote instanceof InetSocketAddress inet ? inet.getPort() : -1;
                h.startTls(options.tls().credentials().clientEngine(hostname, port));
            }
            h.run(options);
            return new NbdClient(h);
        } catch (OptionRefused e) {
            Handshake.abort(h.channel); // proto.md: a client that gives up sends NBD_OPT_ABORT (as QEMU's nbd_send_opt_abort)
            h.channel.close();
            throw e;
        } catch (IOException | RuntimeException e) {
            h.channel.close();
            throw e;
        }
    }

    /** The TLS checks QEMU makes before connecting; returns the name to verify (null: no TLS). */
    private static String checkTls(Options options, SocketAddress address) throws IoError {
        if (options.tls() == null) {
            return null;
        }
        if (options.tls().credentials().endpoint() != X509Credentials.Endpoint.CLIENT) {
            throw new IoError(Errno.EINVAL, "Expected TLS credentials for a client endpoint");
        }
        String hostname = options.tls().hostname();
        if (hostname == null && address instanceof InetSocketAddress inet) {
            hostname = inet.getHostString();
        }
        if (hostname == null) {
            throw new IoError(Errno.EINVAL, "No hostname for certificate validation");
        }
        return hostname;
    }

    public long size() {
        return size;
    }

    public boolean readOnly() {
        return (transmissionFlags & Nbd.FLAG_READ_ONLY) != 0;
    }

    public int transmissionFlags() {
        return transmissionFlags;
    }

    /** Whether the server agreed to structured replies (needed for block status). */
    public boolean structuredReplies() {
        return structured;
    }

    /** The meta contexts the server selected, by name, with their ids. */
    public Map<String, Integer> metaContexts() {
        return contexts;
    }

    /** The largest request payload the server takes (its INFO_BLOCK_SIZE maximum, else 32 MiB). */
    public int maxRequest() {
        return maxBlock;
    }

    public int minBlock() {
        return minBlock;
    }

    /** False once the connection failed or was closed: every later request fails with EIO. */
    public boolean connected() {
        return broken == null;
    }

    /**
     * Completes, once, when the connection ends: the server closed it, a protocol violation, a
     * failed send, or {@link #close()}. Lets an owner notice a drop while no request is waiting.
     */
    public CompletableFuture<IOException> disconnected() {
        return disconnected;
    }

    // ------------------------------------------------------------------ requests

    /** Reads {@code dst.remaining()} bytes at {@code offset} into {@code dst} (position advanced). */
    public void read(long offset, ByteBuffer dst) throws IOException {
        int n = dst.remaining();
        Pending p = new Pending(Nbd.CMD_READ, offset, n, dst.slice());
        call(p, 0, null);
        dst.position(dst.position() + n);
    }

    public void write(long offset, ByteBuffer src, boolean fua) throws IOException {
        requireWritable();
        Pending p = new Pending(Nbd.CMD_WRITE, offset, src.remaining(), null);
        call(p, fua ? Nbd.CMD_FLAG_FUA : 0, src);
    }

    public void writeZeroes(long offset, long length, boolean mayTrim, boolean fua) throws IOException {
        requireWritable();
        requireFlag(Nbd.FLAG_SEND_WRITE_ZEROES, "WRITE_ZEROES");
        int flags = (mayTrim ? 0 : Nbd.CMD_FLAG_NO_HOLE) | (fua ? Nbd.CMD_FLAG_FUA : 0);
        call(new Pending(Nbd.CMD_WRITE_ZEROES, offset, length, null), flags, null);
    }

    public void trim(long offset, long length) throws IOException {
        requireWritable();
        requireFlag(Nbd.FLAG_SEND_TRIM, "TRIM");
        call(new Pending(Nbd.CMD_TRIM, offset, length, null), 0, null);
    }

    public void flush() throws IOException {
        requireFlag(Nbd.FLAG_SEND_FLUSH, "FLUSH");
        call(new Pending(Nbd.CMD_FLUSH, 0, 0, null), 0, null);
    }

    /**
     * BLOCK_STATUS of {@code length} bytes at {@code offset}: for each selected meta context
     * (by id), the extents the server sent, in order, never past the request's end (the last one
     * may be clipped; the server may describe less than asked).
     */
    public Map<Integer, List<Extent>> blockStatus(long offset, long length, boolean reqOne) throws IOException {
        if (contexts.isEmpty()) {
            throw new IoError(Errno.ENOTSUP, "no meta context was negotiated for BLOCK_STATUS");
        }
        Pending p = new Pending(Nbd.CMD_BLOCK_STATUS, offset, length, null);
        call(p, reqOne ? Nbd.CMD_FLAG_REQ_ONE : 0, null);
        return p.extents;
    }

    private void requireWritable() throws IoError {
        if (readOnly()) {
            throw new IoError(Errno.EPERM, "the NBD export is read-only");
        }
    }

    private void requireFlag(int flag, String what) throws IoError {
        if ((transmissionFlags & flag) == 0) {
            throw new IoError(Errno.ENOTSUP, "the NBD server does not support " + what);
        }
    }

    private void call(Pending p, int flags, ByteBuffer payload) throws IOException {
        if (p.offset < 0 || p.length < 0 || p.length > 0xffffffffL) {
            throw new IoError(Errno.EINVAL, "request out of range: offset " + p.offset + ", length " + p.length);
        }
        long handle = handles.getAndIncrement();
        IOException b = broken;
        if (b != null) {
            throw new IoError(Errno.EIO, "NBD connection lost: " + b.getMessage(), b);
        }
        pending.put(handle, p);
        ByteBuffer header = header(flags, p.type, handle, p.offset, p.length);
        sendLock.lock();
        try {
            writeFully(header);
            if (payload != null) {
                writeFully(payload.duplicate());
            }
        } catch (IOException e) {
            pending.remove(handle);
            fail(e);
            throw new IoError(Errno.EIO, "NBD connection lost: " + e.getMessage(), e);
        } finally {
            sendLock.unlock();
        }
        // A failure found by the reader after the put above completes the future too.
        if (broken != null) {
            fail(broken);
        }
        try {
            p.done.get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IoError(Errno.ECANCELED, "interrupted waiting for the NBD server", e);
        } catch (ExecutionException e) {
            Throwable c = e.getCause();
            throw c instanceof IoError io ? io : new IoError(Errno.EIO, "NBD connection lost: " + c.getMessage(), c);
        }
        if (p.error != null) {
            throw p.error;
        }
    }

    /** A request header (proto.md "Request message"), ready to send. */
    private static ByteBuffer header(int flags, int type, long handle, long offset, long length) {
        return ByteBuffer.allocate(28).putInt(Nbd.REQUEST_MAGIC).putShort((short) flags).putShort((short) type)
                .putLong(handle).putLong(offset).putInt((int) length).flip();
    }

    private void writeFully(ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            channel.write(b);
        }
    }

    // ------------------------------------------------------------------ replies

    private void readReplies() {
        try {
            while (true) {
                int magic = in.readInt();
                if (magic == Nbd.SIMPLE_REPLY_MAGIC) {
                    simpleReply();
                } else if (magic == Nbd.STRUCTURED_REPLY_MAGIC && structured) {
                    structuredChunk();
                } else {
                    throw new NbdProtocolException("bad reply magic 0x" + Integer.toHexString(magic));
                }
            }
        } catch (IOException e) {
            fail(e instanceof EOFException && closing ? new IOException("client closed", e) : e);
        } catch (RuntimeException e) {
            fail(new NbdProtocolException("reply handling failed: " + e));
        }
    }

    /** The request a reply is for; it stays pending until {@link #finish}, so a failure on the way fails it too. */
    private Pending pendingFor(long handle) throws NbdProtocolException {
        Pending p = pending.get(handle);
        if (p == null) {
            throw new NbdProtocolException("reply for unknown handle " + handle);
        }
        return p;
    }

    private void finish(long handle, Pending p) {
        pending.remove(handle);
        p.done.complete(null);
    }

    private void simpleReply() throws IOException {
        int error = in.readInt();
        long handle = in.readLong();
        Pending p = pendingFor(handle);
        if (error != 0) {
            p.error = errorOf(error, "", p);
        } else if (p.type == Nbd.CMD_READ) {
            if (structured) {
                throw new NbdProtocolException("simple reply to a READ after structured replies were negotiated");
            }
            in.readFully(p.dst.duplicate());
        } else if (p.type == Nbd.CMD_BLOCK_STATUS) {
            throw new NbdProtocolException("simple success reply to BLOCK_STATUS");
        }
        finish(handle, p);
    }

    private void structuredChunk() throws IOException {
        int flags = in.readUnsignedShort();
        int type = in.readUnsignedShort();
        long handle = in.readLong();
        long length = Integer.toUnsignedLong(in.readInt());
        boolean last = (flags & Nbd.REPLY_FLAG_DONE) != 0;
        Pending p = pendingFor(handle);
        switch (type) {
            case Nbd.REPLY_TYPE_NONE -> {
                if (length != 0 || !last) {
                    throw new NbdProtocolException("NONE chunk with length " + length + " or without DONE");
                }
            }
            case Nbd.REPLY_TYPE_OFFSET_DATA -> {
                if (p.type != Nbd.CMD_READ || length < 8) {
                    throw new NbdProtocolException("unexpected OFFSET_DATA chunk");
                }
                long off = in.readLong();
                long n = length - 8;
                ByteBuffer at = slice(p, off, n);
                in.readFully(at);
            }
            case Nbd.REPLY_TYPE_OFFSET_HOLE -> {
                if (p.type != Nbd.CMD_READ || length != 12) {
                    throw new NbdProtocolException("unexpected OFFSET_HOLE chunk");
                }
                long off = in.readLong();
                long n = Integer.toUnsignedLong(in.readInt());
                ByteBuffer at = slice(p, off, n);
                while (at.hasRemaining()) {
                    at.put((byte) 0);
                }
            }
            case Nbd.REPLY_TYPE_BLOCK_STATUS -> blockStatusChunk(p, length);
            case Nbd.REPLY_TYPE_ERROR, Nbd.REPLY_TYPE_ERROR_OFFSET -> {
                if (length < 6) {
                    throw new NbdProtocolException("error chunk too short: " + length);
                }
                int error = in.readInt();
                int msgLen = in.readUnsignedShort();
                long rest = length - 6 - msgLen - (type == Nbd.REPLY_TYPE_ERROR_OFFSET ? 8 : 0);
                if (msgLen > Nbd.MAX_STRING_SIZE || rest != 0) {
                    throw new NbdProtocolException("error chunk lengths do not add up");
                }
                ByteBuffer msg = ByteBuffer.allocate(msgLen);
                in.readFully(msg);
                if (type == Nbd.REPLY_TYPE_ERROR_OFFSET) {
                    in.readLong();
                }
                if (p.error == null) {
                    p.error = errorOf(error, new String(msg.array(), StandardCharsets.UTF_8), p);
                }
            }
            default -> {
                if ((type & 0x8000) != 0) { // an unknown error type: still an error (proto.md)
                    in.skip(length);
                    if (p.error == null) {
                        p.error = new IoError(Errno.EIO, "NBD server sent error chunk type " + type);
                    }
                } else {
                    throw new NbdProtocolException("unknown chunk type " + type);
                }
            }
        }
        if (last) {
            finish(handle, p);
        }
    }

    /** The part of a READ's buffer a data or hole chunk fills; outside the request is a violation. */
    private static ByteBuffer slice(Pending p, long off, long n) throws NbdProtocolException {
        if (off < p.offset || n > p.length || off - p.offset > p.length - n) {
            throw new NbdProtocolException("chunk " + off + "+" + n + " outside the READ " + p.offset + "+" + p.length);
        }
        return p.dst.slice((int) (off - p.offset), (int) n);
    }

    private void blockStatusChunk(Pending p, long length) throws IOException {
        if (p.type != Nbd.CMD_BLOCK_STATUS || length < 12 || (length - 4) % 8 != 0) {
            throw new NbdProtocolException("unexpected BLOCK_STATUS chunk (length " + length + ")");
        }
        int id = in.readInt();
        if (!contexts.containsValue(id) || p.extents.containsKey(id)) {
            throw new NbdProtocolException("BLOCK_STATUS chunk for context " + id + " not selected or repeated");
        }
        long count = (length - 4) / 8;
        List<Extent> list = new ArrayList<>((int) Math.min(count, 1024));
        long covered = 0;
        for (long i = 0; i < count; i++) {
            long len = Integer.toUnsignedLong(in.readInt());
            int flags = in.readInt();
            if (len == 0) {
                throw new NbdProtocolException("BLOCK_STATUS extent of length 0");
            }
            // The server may describe past the end of the request only in its last extent
            // (proto.md); clip it, keep nothing beyond.
            long keep = Math.min(len, p.length - covered);
            if (keep > 0) {
                list.add(new Extent(keep, flags));
            }
            covered += len;
        }
        p.extents.put(id, list);
    }

    private static IoError errorOf(int code, String message, Pending p) {
        Errno errno = NbdError.fromCode(code).errno();
        return new IoError(errno, "NBD server: " + (message.isEmpty() ? errno.strerror() : message)
                + " (request " + p.type + " at " + p.offset + "+" + p.length + ")");
    }

    private void fail(IOException cause) {
        if (broken == null) {
            broken = cause;
        }
        disconnected.complete(broken);
        for (Long h : List.copyOf(pending.keySet())) {
            Pending p = pending.remove(h);
            if (p != null) {
                p.done.completeExceptionally(new IoError(Errno.EIO, "NBD connection lost: " + cause.getMessage(),
                        cause));
            }
        }
    }

    /** NBD_CMD_DISC, then the socket closes; requests still waiting fail. */
    @Override
    public void close() throws IOException {
        closing = true;
        try {
            if (broken == null) {
                ByteBuffer header = header(0, Nbd.CMD_DISC, handles.getAndIncrement(), 0, 0);
                sendLock.lock();
                try {
                    writeFully(header);
                } catch (IOException e) {
                    // closing anyway
                } finally {
                    sendLock.unlock();
                }
            }
        } finally {
            channel.close();
            fail(new IOException("client closed"));
            try {
                reader.join();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }

    // ------------------------------------------------------------------ handshake

    /** The fixed newstyle negotiation; its results. */
    private static final class Handshake {
        ByteChannel channel;
        NbdReader in;
        long size;
        int flags;
        boolean structured;
        final Map<String, Integer> contexts = new LinkedHashMap<>();
        int minBlock = 1;
        int maxBlock = Nbd.MAX_BUFFER_SIZE;

        private boolean greeted;

        Handshake(SocketChannel ch) {
            this.channel = ch;
            this.in = new NbdReader(ch);
        }

        /** The server's greeting and our flags (once, before the first option). */
        private void greet() throws IOException {
            if (greeted) {
                return;
            }
            greeted = true;
            if (in.readLong() != Nbd.NBDMAGIC || in.readLong() != Nbd.IHAVEOPT) {
                throw new NbdProtocolException("not an NBD server with newstyle negotiation");
            }
            int serverFlags = in.readUnsignedShort();
            if ((serverFlags & Nbd.FLAG_FIXED_NEWSTYLE) == 0) {
                throw new NbdProtocolException("the server does not do fixed newstyle negotiation");
            }
            int clientFlags = Nbd.FLAG_C_FIXED_NEWSTYLE | (serverFlags & Nbd.FLAG_NO_ZEROES);
            send(channel, ByteBuffer.allocate(4).putInt(clientFlags).flip());
        }

        /** NBD_OPT_STARTTLS, then the TLS handshake; every later byte goes through TLS. */
        void startTls(SSLEngine engine) throws IOException {
            greet();
            option(channel, Nbd.OPT_STARTTLS, ByteBuffer.allocate(0));
            Reply r = reply(in, Nbd.OPT_STARTTLS);
            if (r.isError()) {
                throw refused(Nbd.OPT_STARTTLS, r);
            }
            if (r.type != Nbd.REP_ACK || r.data.hasRemaining() || in.hasBuffered()) {
                throw new NbdProtocolException("unexpected reply " + r.type + " to STARTTLS");
            }
            TlsChannel tls;
            try {
                tls = TlsChannel.handshake(channel, engine);
            } catch (SSLException e) {
                throw new IoError(Errno.EIO, "TLS handshake failed: " + e.getMessage(), e);
            }
            channel = tls;
            in = new NbdReader(tls);
        }

        void run(Options o) throws IOException {
            Handshake h = this;
            ByteChannel ch = channel;
            greet();
            // structured replies
            request(ch, Nbd.OPT_STRUCTURED_REPLY, ByteBuffer.allocate(0));
            Reply r = reply(in, Nbd.OPT_STRUCTURED_REPLY);
            if (r.type == Nbd.REP_ACK) {
                h.structured = true;
            } else if (!r.isError()) {
                // (a refusal is tolerated, as QEMU does: a TLS-only server's is then met at GO,
                // which is where QEMU reports it, "before option 7 (go)")
                throw new NbdProtocolException("unexpected reply " + r.type + " to STRUCTURED_REPLY");
            }
            byte[] name = o.export().getBytes(StandardCharsets.UTF_8);
            if (name.length > Nbd.MAX_STRING_SIZE) {
                throw new IoError(Errno.EINVAL, "export name longer than " + Nbd.MAX_STRING_SIZE + " bytes");
            }
            // Meta contexts need structured replies; without them none is selected (QEMU's
            // nbd_receive_negotiate asks only then), and metaContexts() says so.
            if (!o.metaContexts().isEmpty() && h.structured) {
                int len = 4 + name.length + 4;
                List<byte[]> qs = new ArrayList<>();
                for (String c : o.metaContexts()) {
                    byte[] b = c.getBytes(StandardCharsets.UTF_8);
                    qs.add(b);
                    len += 4 + b.length;
                }
                ByteBuffer d = ByteBuffer.allocate(len).putInt(name.length).put(name).putInt(qs.size());
                for (byte[] b : qs) {
                    d.putInt(b.length).put(b);
                }
                request(ch, Nbd.OPT_SET_META_CONTEXT, d.flip());
                while (true) {
                    r = reply(in, Nbd.OPT_SET_META_CONTEXT);
                    if (r.type == Nbd.REP_ACK) {
                        break;
                    }
                    if (r.type == Nbd.REP_ERR_UNSUP) {
                        break; // a server without meta contexts: none selected, as QEMU tolerates
                    }
                    if (r.isError()) {
                        throw refused(Nbd.OPT_SET_META_CONTEXT, r);
                    }
                    if (r.type != Nbd.REP_META_CONTEXT || r.data.remaining() < 4) {
                        throw new NbdProtocolException("unexpected reply " + r.type + " to SET_META_CONTEXT");
                    }
                    int id = r.data.getInt();
                    h.contexts.put(StandardCharsets.UTF_8.decode(r.data).toString(), id);
                }
            }
            ByteBuffer go = ByteBuffer.allocate(4 + name.length + 2 + 2).putInt(name.length).put(name)
                    .putShort((short) 1).putShort((short) Nbd.INFO_BLOCK_SIZE).flip();
            request(ch, Nbd.OPT_GO, go);
            boolean haveExport = false;
            while (true) {
                r = reply(in, Nbd.OPT_GO);
                if (r.type == Nbd.REP_ACK) {
                    break;
                }
                if (r.isError()) {
                    throw refused(Nbd.OPT_GO, r);
                }
                if (r.type != Nbd.REP_INFO || r.data.remaining() < 2) {
                    throw new NbdProtocolException("unexpected reply " + r.type + " to GO");
                }
                int info = Short.toUnsignedInt(r.data.getShort());
                if (info == Nbd.INFO_EXPORT && r.data.remaining() == 10) {
                    h.size = r.data.getLong();
                    h.flags = Short.toUnsignedInt(r.data.getShort());
                    haveExport = true;
                } else if (info == Nbd.INFO_BLOCK_SIZE && r.data.remaining() == 12) {
                    h.minBlock = r.data.getInt();
                    r.data.getInt();
                    h.maxBlock = (int) Math.min(Nbd.MAX_BUFFER_SIZE, Integer.toUnsignedLong(r.data.getInt()));
                }
            }
            if (!haveExport || h.size < 0) {
                throw new NbdProtocolException("GO ended without a valid export size");
            }
        }

        /**
         * nbd/client.c nbd_handle_reply_err()'s texts, by reply type, for the one place a
         * refusal is worded (the nbd block driver shows them as QEMU does).
         */
        private static OptionRefused refused(int option, Reply r) {
            String msg = StandardCharsets.UTF_8.decode(r.data.duplicate()).toString();
            String opt = option + " (" + Nbd.optionName(option) + ")";
            String text = switch (r.type) {
                case Nbd.REP_ERR_UNKNOWN -> "Requested export not available";
                case Nbd.REP_ERR_POLICY -> "Denied by server for option " + opt;
                case Nbd.REP_ERR_INVALID -> "Invalid parameters for option " + opt;
                case Nbd.REP_ERR_PLATFORM -> "Server lacks support for option " + opt;
                case Nbd.REP_ERR_TLS_REQD -> "TLS negotiation required before option " + opt;
                case Nbd.REP_ERR_SHUTDOWN -> "Server shutting down before option " + opt;
                case Nbd.REP_ERR_BLOCK_SIZE_REQD -> "Server requires INFO_BLOCK_SIZE for option " + opt;
                case Nbd.REP_ERR_TOO_BIG -> "Server considers option " + opt + " too large";
                case Nbd.REP_ERR_UNSUP -> "Unsupported option " + opt;
                default -> "Unknown error code when asking for option " + opt;
            };
            Errno e = switch (r.type) {
                case Nbd.REP_ERR_UNKNOWN -> Errno.ENOENT;
                case Nbd.REP_ERR_POLICY -> Errno.EPERM;
                case Nbd.REP_ERR_UNSUP -> Errno.ENOTSUP;
                default -> Errno.EINVAL;
            };
            return new OptionRefused(e, text, option, r.type, msg);
        }

        /**
         * Sends an option the caller then reads the reply of. When the server has already hung
         * up, its reason is what the caller should see, not our broken pipe: after STARTTLS a
         * server refusing our certificate sends its alert and closes, which in TLS 1.3 can beat
         * our first option; the alert is still there to read. Otherwise QEMU's
         * nbd_send_option_request text.
         */
        private void request(WritableByteChannel ch, int option, ByteBuffer data) throws IOException {
            try {
                option(ch, option, data);
            } catch (IOException sendFailed) {
                // A failed send means the peer has closed, so this read ends at once: with its
                // reason (reply() names the step), or with EOF, which reply() reports likewise.
                try {
                    reply(in, option);
                } catch (IOException why) {
                    why.addSuppressed(sendFailed);
                    throw why;
                }
                throw new IoError(Errno.EIO, "Failed to send option request: " + describe(sendFailed), sendFailed);
            }
        }

        private static String describe(IOException e) {
            return e.getMessage() == null ? e.getClass().getSimpleName() : e.getMessage();
        }

        /** Best effort: the server may already be gone. */
        static void abort(WritableByteChannel ch) {
            try {
                option(ch, Nbd.OPT_ABORT, ByteBuffer.allocate(0));
            } catch (IOException ignored) {
                // closing anyway
            }
        }

        private static void option(WritableByteChannel ch, int option, ByteBuffer data) throws IOException {
            ByteBuffer b = ByteBuffer.allocate(16 + data.remaining()).putLong(Nbd.IHAVEOPT).putInt(option)
                    .putInt(data.remaining()).put(data).flip();
            send(ch, b);
        }

        private static void send(WritableByteChannel ch, ByteBuffer b) throws IOException {
            while (b.hasRemaining()) {
                ch.write(b);
            }
        }

        private record Reply(int option, int type, ByteBuffer data) {
            boolean isError() {
                return (type & 0x80000000) != 0;
            }
        }

        /**
         * The server's reply to {@code option}. A failure to read it names that step, as QEMU's
         * nbd_receive_option_reply does ("Failed to read option reply: ..."): after STARTTLS it is
         * where a server's refusal of our certificate arrives (TLS 1.3 ends the client's side of
         * the handshake before the server has judged it).
         */
        private static Reply reply(NbdReader in, int option) throws IOException {
            try {
                return readReply(in, option);
            } catch (NbdProtocolException | IoError e) {
                throw e;
            } catch (IOException e) {
                throw new IoError(Errno.EIO, "Failed to read option reply: " + describe(e), e);
            }
        }

        private static Reply readReply(NbdReader in, int option) throws IOException {
            if (in.readLong() != Nbd.OPT_REPLY_MAGIC) {
                throw new NbdProtocolException("bad option reply magic");
            }
            int opt = in.readInt();
            int type = in.readInt();
            long len = Integer.toUnsignedLong(in.readInt());
            if (opt != option) {
                throw new NbdProtocolException("reply to option " + opt + " while negotiating " + option);
            }
            if (len > Nbd.MAX_OPTION_LENGTH) {
                throw new NbdProtocolException("option reply of " + len + " bytes");
            }
            ByteBuffer data = ByteBuffer.allocate((int) len);
            in.readFully(data);
            return new Reply(opt, type, data.flip());
        }
    }
}
