package jblockd.nbd.server;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.security.cert.Certificate;
import java.security.cert.X509Certificate;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Semaphore;
import java.util.logging.Level;
import java.util.logging.Logger;

import javax.net.ssl.SSLException;
import javax.net.ssl.SSLPeerUnverifiedException;

import jblockd.block.Allocation;
import jblockd.block.BlockNode;
import jblockd.block.BlockStatus;
import jblockd.block.Extent;
import jblockd.block.IoError;
import jblockd.device.GuestIo;
import jblockd.nbd.proto.Nbd;
import jblockd.nbd.proto.NbdError;
import jblockd.nbd.proto.NbdOption;
import jblockd.nbd.proto.NbdProtocolException;
import jblockd.nbd.proto.NbdReader;
import jblockd.nbd.proto.NbdRequest;
import jblockd.nbd.proto.NbdWriter;
import jblockd.qapi.IoOperation;
import jblockd.tls.TlsChannel;
import jblockd.tls.PeerName;
import jblockd.tls.ServerTls;

/**
 * One client: the fixed-newstyle handshake, then the transmission loop. The loop's thread reads
 * each request (with its WRITE payload) and hands it to the server's {@link RequestExecutor}
 * (which runs it on this thread when no warm thread is idle), at most
 * {@link NbdServer#MAX_IN_FLIGHT} at once, and each handler replies when it finishes, so replies
 * may overtake each other (matched by handle). Replies follow qemu-nbd 7.2 (formats.md §8):
 * structured replies for READ and BLOCK_STATUS and for errors once negotiated, simple replies for
 * the success of everything else.
 */
final class NbdConnection {
    private static final Logger LOG = Logger.getLogger(NbdConnection.class.getName());

    private final NbdServer server;
    private final SocketChannel channel;
    private final BufferPool buffers;
    private final RequestExecutor requests;
    /** The server's TLS when it is TLS-only, else null. */
    private final ServerTls tls;
    /** Set by STARTTLS; the reader and writer are then replaced by ones over it. */
    private TlsChannel tlsChannel;
    /** The refusal of an option before TLS was logged (once per connection). */
    private boolean loggedTlsRequired;
    // Replaced once, by STARTTLS, during the handshake (this thread only, before any handler
    // runs; the executor's hand-off publishes them to handler threads).
    private NbdReader reader;
    private NbdWriter writer;

    private boolean noZeroes;
    private boolean structured;
    /** What the last SET_META_CONTEXT selected (and on which export). */
    private MetaContexts meta = MetaContexts.NONE;
    /** The contexts BLOCK_STATUS answers: {@link #meta} if it was made on the export entered. */
    private MetaContexts selected = MetaContexts.NONE;
    private NbdExport export;

    NbdConnection(NbdServer server, SocketChannel channel, BufferPool buffers, RequestExecutor requests,
                  ServerTls tls) {
        this.server = server;
        this.tls = tls;
        this.channel = channel;
        this.requests = requests;
        this.buffers = buffers;
        this.reader = new NbdReader(channel);
        this.writer = new NbdWriter(channel);
    }

    /** Hard disconnect (export removed with mode=hard, server stopped). */
    void close() {
        try {
            channel.close();
        } catch (IOException ignored) {
            // already closed
        }
    }

    void run() {
        try {
            if (handshake()) {
                transmission();
            }
        } catch (EOFException | java.nio.channels.ClosedChannelException e) {
            // client went away
        } catch (NbdProtocolException e) {
            LOG.log(Level.INFO, "NBD client dropped: {0}", e.getMessage());
        } catch (IOException e) {
            LOG.log(Level.FINE, "NBD connection ended", e);
        } finally {
            if (export != null) {
                export.connections().remove(this);
            }
            if (tlsChannel != null) {
                try {
                    tlsChannel.close(); // close_notify, then the socket
                } catch (IOException ignored) {
                    // gone
                }
            }
            close();
        }
    }

    // ==== handshake =============================================================================

    /** True when the client entered transmission with an export. */
    private boolean handshake() throws IOException {
        writer.greeting(Nbd.FLAG_FIXED_NEWSTYLE | Nbd.FLAG_NO_ZEROES);
        int clientFlags = reader.readClientFlags();
        if ((clientFlags & ~(Nbd.FLAG_C_FIXED_NEWSTYLE | Nbd.FLAG_C_NO_ZEROES)) != 0) {
            throw new NbdProtocolException("Unknown client flags 0x" + Integer.toHexString(clientFlags));
        }
        noZeroes = (clientFlags & Nbd.FLAG_C_NO_ZEROES) != 0;
        while (true) {
            NbdOption opt = reader.readOption();
            int o = opt.option();
            if (tls != null && tlsChannel == null) {
                if (!beforeTls(opt)) {
                    return false;
                }
                continue;
            }
            switch (o) {
                case Nbd.OPT_EXPORT_NAME -> {
                    String name = StandardCharsets.UTF_8.decode(opt.data().duplicate()).toString();
                    NbdExport e = server.findForClient(name);
                    if (e == null || !server.attach(e, this)) {
                        // EXPORT_NAME cannot fail politely: drop the client (QEMU does too)
                        throw new NbdProtocolException("export not found");
                    }
                    export = e;
                    selected = meta.forExport(e);
                    writer.exportNameReply(e.size(), e.transmissionFlags(structured), noZeroes);
                    return true;
                }
                case Nbd.OPT_ABORT -> {
                    // QEMU acknowledges, then disconnects; the client may already be gone
                    try {
                        writer.optionAck(o);
                    } catch (IOException ignored) {
                        // fine
                    }
                    return false;
                }
                case Nbd.OPT_LIST -> {
                    if (opt.data().hasRemaining()) {
                        rejectLength(o);
                    } else {
                        for (NbdExport e : server.exports()) {
                            if (!e.shuttingDown()) {
                                writer.optionServer(o, e.name(), e.description());
                            }
                        }
                        writer.optionAck(o);
                    }
                }
                case Nbd.OPT_STARTTLS -> {
                    if (opt.data().hasRemaining()) {
                        rejectLength(o);
                    } else {
                        // a TLS server got here only after the upgrade (QEMU's texts for both)
                        writer.optionError(o, tls != null ? Nbd.REP_ERR_INVALID : Nbd.REP_ERR_POLICY,
                                tls != null ? "TLS already enabled" : "TLS not configured");
                        if (tls == null) {
                            LOG.log(Level.INFO, "NBD client asked for TLS (STARTTLS), refused: TLS not configured"
                                    + " on this server (nbd-server-start tls-creds)");
                        }
                    }
                }
                case Nbd.OPT_STRUCTURED_REPLY -> {
                    if (opt.data().hasRemaining()) {
                        rejectLength(o);
                    } else if (structured) {
                        writer.optionError(o, Nbd.REP_ERR_INVALID, "structured reply already negotiated");
                    } else {
                        structured = true;
                        writer.optionAck(o);
                    }
                }
                case Nbd.OPT_INFO, Nbd.OPT_GO -> {
                    if (infoOrGo(opt)) {
                        return true;
                    }
                }
                case Nbd.OPT_LIST_META_CONTEXT, Nbd.OPT_SET_META_CONTEXT -> metaContext(opt);
                default -> writer.optionError(o, Nbd.REP_ERR_UNSUP,
                        "Unsupported option " + Integer.toUnsignedString(o) + " (" + Nbd.optionName(o) + ")");
            }
        }
    }

    /**
     * An option on a TLS-only server before the upgrade (nbd/server.c nbd_negotiate_options):
     * STARTTLS upgrades; EXPORT_NAME cannot be refused politely, so the client is dropped; any
     * other option is answered REP_ERR_TLS_REQD, and ABORT then ends the connection. False when
     * the connection is to end.
     */
    private boolean beforeTls(NbdOption opt) throws IOException {
        int o = opt.option();
        String notPermitted = "Option 0x" + Integer.toHexString(o) + " not permitted before TLS";
        switch (o) {
            case Nbd.OPT_STARTTLS -> {
                if (opt.data().hasRemaining()) {
                    rejectLength(o);
                    return true;
                }
                writer.optionAck(o);
                startTls();
                return true;
            }
            case Nbd.OPT_EXPORT_NAME -> throw new NbdProtocolException(notPermitted);
            default -> {
                writer.optionError(o, Nbd.REP_ERR_TLS_REQD, notPermitted);
                if (!loggedTlsRequired) {
                    // QEMU's server says nothing here; the operator of a TLS-only server should
                    // see why a client got nowhere (once per connection: a client may try more)
                    loggedTlsRequired = true;
                    LOG.log(Level.INFO, "NBD client refused: option {0} ({1}) before TLS, this server requires TLS",
                            new Object[] {"0x" + Integer.toHexString(o), Nbd.optionName(o)});
                }
                return o != Nbd.OPT_ABORT;
            }
        }
    }

    /** The TLS handshake after STARTTLS's ACK; the rest of the session goes through it. */
    private void startTls() throws IOException {
        if (reader.hasBuffered()) {
            throw new NbdProtocolException("data after STARTTLS before the TLS handshake");
        }
        try {
            tlsChannel = TlsChannel.handshake(channel, tls.credentials().serverEngine());
        } catch (SSLException e) {
            throw new NbdProtocolException("option negotiation failed: TLS handshake failed: " + e.getMessage());
        }
        if (tls.authz() != null) {
            // crypto/tlssession.c: after the handshake, the client certificate's name against tls-authz
            try {
                Certificate[] peer = tlsChannel.session().getPeerCertificates();
                tls.authz().check(PeerName.of((X509Certificate) peer[0]));
            } catch (SSLPeerUnverifiedException e) {
                throw new NbdProtocolException("option negotiation failed: " + e.getMessage());
            }
        }
        reader = new NbdReader(tlsChannel);
        writer = new NbdWriter(tlsChannel);
    }

    private void rejectLength(int option) throws IOException {
        writer.optionError(option, Nbd.REP_ERR_INVALID,
                "option '" + Nbd.optionName(option) + "' has unexpected length");
    }

    /**
     * INFO / GO payload: u32 name length, name, u16 number of info requests, u16 each.
     * Replies NAME (if asked), DESCRIPTION (if set), BLOCK_SIZE, EXPORT, then ACK (QEMU's order).
     * A payload that does not add up is REP_ERR_INVALID with nbd_negotiate_handle_info's texts,
     * checked in its order; an unknown name is echoed sanitised, as in every error reply.
     */
    private boolean infoOrGo(NbdOption opt) throws IOException {
        int o = opt.option();
        ByteBuffer d = opt.data().duplicate();
        String name = optName(o, d);
        if (name == null) {
            return false;
        }
        if (d.remaining() < 2) {
            inconsistentLengths(o);
            return false;
        }
        int nreq = Short.toUnsignedInt(d.getShort());
        if (d.remaining() < 2 * nreq) {
            inconsistentLengths(o);
            return false;
        }
        if (d.remaining() != 2 * nreq) {
            rejectLength(o);
            return false;
        }
        boolean sendName = false;
        boolean blockSize = false;
        for (int i = 0; i < nreq; i++) {
            int r = Short.toUnsignedInt(d.getShort());
            if (r == Nbd.INFO_NAME) {
                sendName = true;
            } else if (r == Nbd.INFO_BLOCK_SIZE) {
                blockSize = true;
            }
        }
        NbdExport e = server.findForClient(name);
        if (e == null) {
            writer.optionError(o, Nbd.REP_ERR_UNKNOWN, "export '" + sanitize(name) + "' not present");
            return false;
        }
        if (sendName) {
            writer.infoString(o, Nbd.INFO_NAME, name);
        }
        if (e.description() != null) {
            writer.infoString(o, Nbd.INFO_DESCRIPTION, e.description());
        }
        // minimum: 1 for clients that do not promise to obey it, the real alignment otherwise
        int min = (o == Nbd.OPT_INFO || blockSize) ? e.requestAlignment() : 1;
        writer.infoBlockSize(o, min, Math.max(4096, min), Nbd.MAX_BUFFER_SIZE);
        writer.infoExport(o, e.size(), e.transmissionFlags(structured));
        if (o == Nbd.OPT_GO) {
            if (!server.attach(e, this)) {
                writer.optionError(o, Nbd.REP_ERR_UNKNOWN, "export '" + sanitize(name) + "' not present");
                return false;
            }
            export = e;
            selected = meta.forExport(e);
        }
        writer.optionAck(o);
        return o == Nbd.OPT_GO;
    }

    /**
     * LIST_/SET_META_CONTEXT (nbd_negotiate_meta_queries). Payload:
     * <pre>
     *  u32 export name length | name | u32 number of queries | (u32 query length | query)*
     * </pre>
     * One META_CONTEXT reply per selected context in id order ({@link MetaContexts}), then ACK.
     * A SET forgets the previous selection before anything else (QEMU resets it first), so a
     * SET that fails leaves nothing selected. A query longer than 4096 bytes is skipped, as
     * QEMU does; lengths that do not fit the option are REP_ERR_INVALID with QEMU's texts.
     */
    private void metaContext(NbdOption opt) throws IOException {
        int o = opt.option();
        boolean set = o == Nbd.OPT_SET_META_CONTEXT;
        if (set && !structured) {
            writer.optionError(o, Nbd.REP_ERR_INVALID,
                    "request option '" + Nbd.optionName(o) + "' when structured reply is not negotiated");
            return;
        }
        if (set) {
            meta = MetaContexts.NONE;
        }
        ByteBuffer d = opt.data().duplicate();
        String name = optName(o, d);
        if (name == null) {
            return;
        }
        NbdExport e = server.findForClient(name);
        if (e == null) {
            writer.optionError(o, Nbd.REP_ERR_UNKNOWN, "export '" + sanitize(name) + "' not present");
            return;
        }
        if (d.remaining() < 4) {
            inconsistentLengths(o);
            return;
        }
        long n = Integer.toUnsignedLong(d.getInt());
        List<String> queries = new ArrayList<>();
        for (long i = 0; i < n; i++) {
            if (d.remaining() < 4) {
                inconsistentLengths(o);
                return;
            }
            long qlen = Integer.toUnsignedLong(d.getInt());
            if (qlen > Nbd.MAX_STRING_SIZE) {
                // QEMU skips an over-long query rather than failing the option
                if (d.remaining() < qlen) {
                    inconsistentLengths(o);
                    return;
                }
                d.position(d.position() + (int) qlen);
                continue;
            }
            String q = optString(o, d, (int) qlen);
            if (q == null) {
                return;
            }
            queries.add(q);
        }
        if (d.hasRemaining()) {
            rejectLength(o);
            return;
        }
        MetaContexts chosen = MetaContexts.select(e, !set, queries);
        for (MetaContexts.Context c : chosen.contexts()) {
            // LIST replies carry id 0 (proto.md: the id is only meaningful for SET)
            writer.metaContext(o, set ? c.id() : 0, c.name());
        }
        writer.optionAck(o);
        if (set) {
            meta = chosen;
        }
    }

    /**
     * An export name at the option's position (nbd_opt_read_name): u32 length, at most
     * {@link Nbd#MAX_STRING_SIZE}, then the name; null after the error reply.
     */
    private String optName(int option, ByteBuffer d) throws IOException {
        if (d.remaining() < 4) {
            inconsistentLengths(option);
            return null;
        }
        long len = Integer.toUnsignedLong(d.getInt());
        if (len > Nbd.MAX_STRING_SIZE) {
            writer.optionError(option, Nbd.REP_ERR_INVALID, "Invalid name length: " + len);
            return null;
        }
        return optString(option, d, (int) len);
    }

    private void inconsistentLengths(int option) throws IOException {
        writer.optionError(option, Nbd.REP_ERR_INVALID, "Inconsistent lengths in option " + Nbd.optionName(option));
    }

    /**
     * A string of {@code len} bytes of the option (nbd_opt_read with its NUL check), or null
     * after the error reply.
     */
    private String optString(int option, ByteBuffer d, int len) throws IOException {
        if (d.remaining() < len) {
            inconsistentLengths(option);
            return null;
        }
        byte[] b = new byte[len];
        d.get(b);
        for (byte x : b) {
            if (x == 0) {
                writer.optionError(option, Nbd.REP_ERR_INVALID,
                        "Unexpected embedded NUL in option " + Nbd.optionName(option));
                return null;
            }
        }
        return new String(b, StandardCharsets.UTF_8);
    }

    /** nbd_sanitize_name(): names of 80 bytes or more are cut to 80 and end in "...". */
    private static String sanitize(String name) {
        byte[] b = name.getBytes(StandardCharsets.UTF_8);
        return b.length < 80 ? name : new String(b, 0, 80, StandardCharsets.UTF_8) + "...";
    }

    // ==== transmission ==========================================================================

    private void transmission() throws IOException {
        Semaphore slots = new Semaphore(NbdServer.MAX_IN_FLIGHT);
        Semaphore kib = new Semaphore(NbdServer.MAX_IN_FLIGHT_KIB);
        try {
            while (true) {
                NbdRequest r = reader.readRequest();
                if (r.type() == Nbd.CMD_DISC) {
                    return; // finally: outstanding requests finish, then we close
                }
                // READ and WRITE carry payloads: count them against the byte budget
                int cost = (r.type() == Nbd.CMD_READ || r.type() == Nbd.CMD_WRITE)
                        ? (int) Math.min(NbdServer.MAX_IN_FLIGHT_KIB, Math.max(1, r.length() >> 10)) : 0;
                slots.acquireUninterruptibly();
                kib.acquireUninterruptibly(cost);
                ByteBuffer payload = null;
                boolean dispatched = false;
                try {
                    if (r.type() == Nbd.CMD_WRITE) {
                        if (r.length() > Nbd.MAX_BUFFER_SIZE) {
                            // The payload cannot be skipped safely (proto.md: a server may
                            // disconnect); reply, then drop the client as QEMU does.
                            replyError(r, NbdError.EINVAL, "len (" + r.length() + ") is larger than max len ("
                                    + Nbd.MAX_BUFFER_SIZE + ")");
                            return;
                        }
                        payload = buffers.acquire((int) r.length());
                        reader.readFully(payload);
                        payload.flip();
                    }
                    ByteBuffer p = payload;
                    requests.execute(() -> {
                        try {
                            handle(r, p);
                        } finally {
                            buffers.release(p);
                            kib.release(cost);
                            slots.release();
                        }
                    });
                    dispatched = true;
                } finally {
                    if (!dispatched) {
                        buffers.release(payload);
                        kib.release(cost);
                        slots.release();
                    }
                }
            }
        } finally {
            // Requests already read complete (their data reaches the node) before we close.
            slots.acquireUninterruptibly(NbdServer.MAX_IN_FLIGHT);
        }
    }

    /** A request the checks refused: errno plus QEMU's message. */
    private record Refusal(NbdError error, String message) {
    }

    /** nbd_co_receive_request's checks, in QEMU 7.2's order (nbd/server.c). */
    private Refusal check(NbdRequest r) {
        int type = r.type();
        if (type == Nbd.CMD_READ && r.length() > Nbd.MAX_BUFFER_SIZE) {
            return new Refusal(NbdError.EINVAL, "len (" + r.length() + ") is larger than max len ("
                    + Nbd.MAX_BUFFER_SIZE + ")");
        }
        if (!export.writable() && (type == Nbd.CMD_WRITE || type == Nbd.CMD_WRITE_ZEROES
                || type == Nbd.CMD_TRIM)) {
            return new Refusal(NbdError.EPERM, "Export is read-only"); // EROFS on the wire is EPERM
        }
        long size = export.size();
        if (Long.compareUnsigned(r.offset(), size) > 0 || r.length() > size - r.offset()) {
            // QEMU: writes past the end are ENOSPC (proto.md asks so), anything else EINVAL.
            // Text as observed from qemu-nbd 7.2 (formats.md §8).
            NbdError err = (type == Nbd.CMD_WRITE || type == Nbd.CMD_WRITE_ZEROES) ? NbdError.ENOSPC
                    : NbdError.EINVAL;
            return new Refusal(err, "Operation past EOF; From: " + Long.toUnsignedString(r.offset())
                    + ", Len: " + r.length() + ", Size: " + size);
        }
        int valid = Nbd.CMD_FLAG_FUA;
        if (type == Nbd.CMD_READ && structured) {
            valid |= Nbd.CMD_FLAG_DF;
        } else if (type == Nbd.CMD_WRITE_ZEROES) {
            valid |= Nbd.CMD_FLAG_NO_HOLE | Nbd.CMD_FLAG_FAST_ZERO;
        } else if (type == Nbd.CMD_BLOCK_STATUS) {
            valid |= Nbd.CMD_FLAG_REQ_ONE;
        }
        if ((r.flags() & ~valid) != 0) {
            return new Refusal(NbdError.EINVAL, "unsupported flags for command " + Nbd.commandName(type)
                    + " (got 0x" + Integer.toHexString(r.flags()) + ")");
        }
        if (type > Nbd.CMD_BLOCK_STATUS) {
            return new Refusal(NbdError.EINVAL, "invalid request type (" + type + ") received");
        }
        if (type == Nbd.CMD_BLOCK_STATUS) {
            // nbd_handle_request's order: the length first
            if (r.length() == 0) {
                return new Refusal(NbdError.EINVAL, "need non-zero length");
            }
            if (selected.isEmpty()) {
                return new Refusal(NbdError.EINVAL, "CMD_BLOCK_STATUS not negotiated");
            }
        }
        return null;
    }

    private void handle(NbdRequest r, ByteBuffer payload) {
        try {
            Refusal refusal = check(r);
            if (refusal != null) {
                replyError(r, refusal.error(), refusal.message());
                return;
            }
            GuestIo io = export.io();
            switch (r.type()) {
                case Nbd.CMD_READ -> read(r, io);
                case Nbd.CMD_WRITE -> {
                    long t0 = System.nanoTime();
                    io.write(r.offset(), payload, r.has(Nbd.CMD_FLAG_FUA));
                    requests.observe(System.nanoTime() - t0, r.length());
                    ok(r);
                }
                case Nbd.CMD_FLUSH -> {
                    io.flush();
                    ok(r);
                }
                case Nbd.CMD_TRIM -> {
                    io.discard(r.offset(), r.length(), r.has(Nbd.CMD_FLAG_FUA));
                    ok(r);
                }
                case Nbd.CMD_CACHE -> ok(r); // a prefetch hint; nothing to warm
                case Nbd.CMD_WRITE_ZEROES -> {
                    if (r.has(Nbd.CMD_FLAG_FAST_ZERO) && !io.root().capabilities().canWriteZeroes()) {
                        // a client asking for fast zeroes wants ENOTSUP at once, not a slow write
                        replyError(r, NbdError.ENOTSUP, "Operation not supported");
                        return;
                    }
                    io.writeZeroes(r.offset(), r.length(), !r.has(Nbd.CMD_FLAG_NO_HOLE), r.has(Nbd.CMD_FLAG_FUA));
                    ok(r);
                }
                case Nbd.CMD_BLOCK_STATUS -> blockStatus(r, io);
                default -> replyError(r, NbdError.EINVAL, "invalid request type (" + r.type() + ") received");
            }
        } catch (IoError e) {
            try {
                replyError(r, NbdError.of(e.errno()), e.getMessage());
            } catch (IOException ignored) {
                // client gone
            }
        } catch (IOException e) {
            // the reply could not be sent: the client is gone; the I/O itself is done
        } catch (RuntimeException e) {
            LOG.log(Level.WARNING, "NBD request failed", e);
            try {
                replyError(r, NbdError.EIO, String.valueOf(e.getMessage()));
            } catch (IOException ignored) {
                // client gone
            }
        }
    }

    private void ok(NbdRequest r) throws IOException {
        writer.simpleReply(r.handle(), 0, null);
    }

    private void replyError(NbdRequest r, NbdError error, String message) throws IOException {
        if (structured) {
            writer.chunkError(r.handle(), error, message);
        } else {
            writer.simpleReply(r.handle(), error.code(), null);
        }
    }

    // ==== READ ==================================================================================

    /** A piece of a structured read reply: data from the buffer, or a hole. */
    private record Piece(long offset, int length, boolean hole) {
    }

    private void read(NbdRequest r, GuestIo io) throws IOException {
        int len = (int) r.length();
        if (len == 0) {
            if (structured) {
                writer.chunkNone(r.handle());
            } else {
                writer.simpleReply(r.handle(), 0, null);
            }
            return;
        }
        ByteBuffer buf = buffers.acquire(len);
        try {
            boolean sparse = structured && !r.has(Nbd.CMD_FLAG_DF);
            long t0 = System.nanoTime();
            List<Piece> pieces = io.run(IoOperation.READ, jblockd.device.IoStats.Type.READ, r.length(), root -> readPieces(root, r.offset(), buf, sparse),
                    () -> {
                        buf.clear().limit(len);
                        while (buf.hasRemaining()) {
                            buf.put((byte) 0);
                        }
                    });
            requests.observe(System.nanoTime() - t0, len);
            if (pieces == null) { // ignored error: the zero-filled buffer as data
                pieces = List.of(new Piece(r.offset(), len, false));
            }
            if (!structured) {
                writer.simpleReply(r.handle(), 0, buf.clear().limit(len));
                return;
            }
            for (int i = 0; i < pieces.size(); i++) {
                Piece p = pieces.get(i);
                boolean done = i == pieces.size() - 1;
                if (p.hole()) {
                    writer.chunkHole(r.handle(), p.offset(), p.length(), done);
                } else {
                    int at = (int) (p.offset() - r.offset());
                    writer.chunkData(r.handle(), p.offset(), buf.slice(at, p.length()), done);
                }
            }
        } finally {
            buffers.release(buf);
        }
    }

    /**
     * Reads the request into {@code buf}; with {@code sparse}, ranges the chain says read as
     * zeroes become holes instead (qemu-nbd's sparse read), merged with their neighbours.
     */
    private static List<Piece> readPieces(BlockNode root, long offset, ByteBuffer buf, boolean sparse)
            throws IOException {
        int len = buf.limit();
        if (!sparse) {
            buf.clear().limit(len);
            root.read(offset, buf);
            return List.of(new Piece(offset, len, false));
        }
        List<Piece> pieces = new ArrayList<>();
        long pos = offset;
        long end = offset + len;
        while (pos < end) {
            Extent e = BlockStatus.readView(root, pos, end - pos);
            boolean hole = e.allocation() == Allocation.ZERO;
            int n = (int) Math.min(e.length(), end - pos);
            Piece last = pieces.isEmpty() ? null : pieces.getLast();
            if (last != null && last.hole() == hole) {
                pieces.set(pieces.size() - 1, new Piece(last.offset(), last.length() + n, hole));
            } else {
                pieces.add(new Piece(pos, n, hole));
            }
            pos += n;
        }
        for (Piece p : pieces) {
            if (!p.hole()) {
                int at = (int) (p.offset() - offset);
                root.read(p.offset(), buf.slice(at, p.length()));
            }
        }
        return pieces;
    }

    // ==== BLOCK_STATUS ==========================================================================

    /**
     * One BLOCK_STATUS chunk per selected context, in id order, the last one flagged DONE
     * (nbd_handle_request). Each chunk's extents are built on their own, at most one with
     * REQ_ONE, each clipped to the request:
     * <ul>
     *   <li>{@code base:allocation}: data 0, anything reading as zeroes HOLE|ZERO (3);</li>
     *   <li>{@code qemu:allocation-depth}: the depth of the layer that provides the data
     *   ({@link BlockStatus#allocationDepth}), 0 when no layer does;</li>
     *   <li>{@code qemu:dirty-bitmap:NAME}: DIRTY (1) per dirty granule of the bitmap.</li>
     * </ul>
     * A failure of the chain walk answers the chunks not yet sent with QEMU's error chunk.
     */
    private void blockStatus(NbdRequest r, GuestIo io) throws IOException {
        boolean one = r.has(Nbd.CMD_FLAG_REQ_ONE);
        long offset = r.offset();
        long len = r.length();
        List<MetaContexts.Context> contexts = selected.contexts();
        for (int i = 0; i < contexts.size(); i++) {
            MetaContexts.Context c = contexts.get(i);
            ExtentList extents = ExtentList.forRequest(one);
            if (c.id() >= MetaContexts.ID_DIRTY_BITMAP) {
                extents.addBitmap(export.bitmaps().get(c.id() - MetaContexts.ID_DIRTY_BITMAP).bits(), offset, len,
                        Nbd.STATE_DIRTY);
            } else {
                boolean depth = c.id() == MetaContexts.ID_ALLOCATION_DEPTH;
                try {
                    io.run(null, root -> {
                        chainExtents(root, offset, offset + len, depth, extents);
                        return null;
                    }, null);
                } catch (IoError e) {
                    replyError(r, NbdError.of(e.errno()), "can't get block status");
                    return;
                }
            }
            writer.chunkBlockStatus(r.handle(), c.id(), extents.toPairs(), extents.count(), i == contexts.size() - 1);
        }
    }

    /** base:allocation or allocation-depth extents of {@code [pos, end)} from the one chain walk. */
    private static void chainExtents(BlockNode root, long pos, long end, boolean depth, ExtentList out)
            throws IOException {
        while (pos < end) {
            long n;
            int flags;
            if (depth) {
                BlockStatus.Depth d = BlockStatus.allocationDepth(root, pos, end - pos);
                n = d.extent().length();
                flags = d.depth();
            } else {
                BlockStatus.ReadView v = BlockStatus.readViewDetail(root, pos, end - pos);
                n = v.extent().length();
                // nbd/server.c blockstatus_to_extents: HOLE unless DATA, ZERO when it reads as zeroes
                flags = v.unknownHole() ? Nbd.STATE_HOLE
                        : v.extent().allocation() == Allocation.ZERO ? Nbd.STATE_HOLE | Nbd.STATE_ZERO : 0;
            }
            n = Math.min(n, end - pos);
            if (!out.add(n, flags)) {
                return;
            }
            pos += n;
        }
    }

    @Override
    public String toString() {
        return "NbdConnection[" + (export == null ? "-" : export.name()) + "]";
    }
}
