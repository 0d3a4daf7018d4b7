package jblockd.block.nbd;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.OptionalLong;
import java.util.concurrent.TimeUnit;

import jblockd.block.Allocation;
import jblockd.block.BlockDriver;
import jblockd.block.BlockdevOptions;
import jblockd.block.Capabilities;
import jblockd.block.DriverRegistry;
import jblockd.block.Errno;
import jblockd.block.Extent;
import jblockd.block.IoError;
import jblockd.block.ObjectLookup;
import jblockd.nbd.client.NbdClient;
import jblockd.nbd.proto.Nbd;
import jblockd.tls.X509Credentials;

/**
 * The {@code nbd} protocol driver (QEMU 7.2 block/nbd.c): a remote NBD export as a node, over
 * {@link NbdClient} (fixed newstyle, OPT_GO, structured replies, several requests in flight)
 * and an {@link NbdLink} that reconnects. What the server offers decides what is passed
 * through (its transmission flags): FUA, WRITE_ZEROES with or without NO_HOLE, TRIM, FLUSH; a
 * server without WRITE_ZEROES gets zero-filled writes (block/io.c's fallback for -ENOTSUP), one
 * without TRIM or FLUSH gets nothing (nbd.c returns 0 for them). Requests are split at the
 * server's maximum block size. Block status comes from {@code base:allocation}, or the
 * {@code x-dirty-bitmap} context instead, asked one extent at a time (NBD_CMD_FLAG_REQ_ONE, as
 * nbd_client_co_block_status); a server without the context makes every range DATA.
 * <p>
 * Thread-safe: each client multiplexes concurrent requests on its connection. When the server
 * offers MULTI_CONN (proto.md: a flush on one connection covers writes completed on all), up to
 * {@link #EXTRA_CONNECTIONS} more connections are made in the background, each its own
 * {@link NbdLink}, and requests go round-robin over those up; the node never waits for them (a
 * server that advertises MULTI_CONN but takes one client only must not hang the open). QEMU
 * 7.2's client uses one connection.
 */
public final class NbdDriver implements BlockDriver {
    /** Write-zeroes, trim and status lengths: QEMU's QEMU_ALIGN_DOWN(INT_MAX, request_alignment). */
    private static final long MAX_RANGE = Integer.MAX_VALUE;
    /** The zero-filled buffer for servers without WRITE_ZEROES. */
    private static final int ZERO_CHUNK = 1 << 20;

    /** More connections when the server offers MULTI_CONN (nbdcopy and qemu-img use 4 in all). */
    static final int EXTRA_CONNECTIONS = 3;

    private final NbdLink link;
    /** The first link, then the extra ones as they come up. */
    private final java.util.concurrent.CopyOnWriteArrayList<NbdLink> links =
            new java.util.concurrent.CopyOnWriteArrayList<>();
    private final java.util.concurrent.atomic.AtomicLong next = new java.util.concurrent.atomic.AtomicLong();
    private final List<Thread> joining = new java.util.concurrent.CopyOnWriteArrayList<>();
    private volatile boolean closed;
    private final String filename;
    private final boolean readOnly;
    private final int flags;
    private final int alignment;
    private final int maxBlock;
    /** The status context's id on the first connection's negotiation, by name (null: none). */
    private final String statusContext;

    /** Releases what the node retained (its TLS credentials); set once after the open. */
    private Runnable onClose = () -> { };

    private NbdDriver(NbdLink link, String filename, boolean readOnly, NbdClient first, String statusContext) {
        this.link = link;
        this.filename = filename;
        this.readOnly = readOnly;
        this.flags = first.transmissionFlags();
        this.alignment = Math.max(1, first.minBlock());
        this.maxBlock = Math.max(alignment, first.maxRequest() / alignment * alignment);
        this.statusContext = first.metaContexts().containsKey(statusContext) ? statusContext : null;
        links.add(link);
    }

    /**
     * Opens the extra connections in the background; one joins only if it shows the same size and
     * flags as the first, and only while the node is open.
     */
    private void joinExtraConnections(int count, NbdConnector connector, NbdTimer timer, long reconnectDelayNanos,
                                      boolean needWrite) {
        if (!has(Nbd.FLAG_CAN_MULTI_CONN)) {
            return;
        }
        for (int i = 0; i < count; i++) {
            joining.add(Thread.ofVirtual().name("nbd-multi-conn").start(() -> {
                NbdLink extra;
                try {
                    extra = NbdLink.open(connector, timer, 0, reconnectDelayNanos, needWrite);
                } catch (IoError e) {
                    return; // one connection fewer
                }
                NbdClient c = extra.current();
                synchronized (links) {
                    if (!closed && c != null && c.size() == link.size() && c.transmissionFlags() == flags) {
                        links.add(extra);
                        return;
                    }
                }
                extra.close();
            }));
        }
    }

    /** The link for the next request: round-robin over the connections up. */
    private NbdLink pick() {
        int n = links.size();
        return n == 1 ? link : links.get((int) Math.floorMod(next.getAndIncrement(), (long) n));
    }

    /** Waits until every extra connection joined or gave up (tests). */
    void awaitExtraConnections() throws InterruptedException {
        for (Thread t : joining) {
            t.join();
        }
    }

    /** Connections in use (the first plus the extra ones that joined). */
    int connections() {
        return links.size();
    }

    public static void register(DriverRegistry r) {
        r.<BlockdevOptions.Nbd>register("nbd", (o, ctx) -> open(o, NbdTimer.SYSTEM, ctx.objects()));
        for (String protocol : new String[] {"nbd", "nbd+tcp", "nbd+unix"}) {
            r.registerProtocol(protocol, (filename, common, filenames) -> NbdFilenames.parse(filename, common));
        }
    }

    /** nbd_open(): options, then the connection (blocking, retried for open-timeout). */
    public static NbdDriver open(BlockdevOptions.Nbd o, NbdTimer timer) throws IOException {
        return open(o, timer, ObjectLookup.NONE);
    }

    /** With {@code tls-creds} looked up in {@code tls} (retained for the node's life). */
    public static NbdDriver open(BlockdevOptions.Nbd o, NbdTimer timer, ObjectLookup tls) throws IOException {
        if (o.server() == null) {
            throw new IoError(Errno.EINVAL, "NBD server address missing");
        }
        if (o.tlsCreds() == null) {
            return open(o, timer, EXTRA_CONNECTIONS);
        }
        X509Credentials creds = tls.retainClient(o.tlsCreds());
        try {
            // tls-hostname, else the inet host (block/nbd.c); a UNIX socket has none and the
            // client refuses with QEMU's "No hostname for certificate validation"
            String hostname = o.tlsHostname() != null ? o.tlsHostname()
                    : o.server() instanceof BlockdevOptions.NbdServer.Inet i ? i.host() : null;
            NbdDriver d = open(o, timer, EXTRA_CONNECTIONS, new NbdClient.Tls(creds, hostname));
            d.onClose = () -> tls.release(o.tlsCreds());
            return d;
        } catch (IOException | RuntimeException e) {
            tls.release(o.tlsCreds());
            throw e;
        }
    }

    /** {@code extraConnections}: at most this many more when the server offers MULTI_CONN. */
    static NbdDriver open(BlockdevOptions.Nbd o, NbdTimer timer, int extraConnections) throws IOException {
        if (o.server() == null) {
            throw new IoError(Errno.EINVAL, "NBD server address missing");
        }
        return open(o, timer, extraConnections, null);
    }

    private static NbdDriver open(BlockdevOptions.Nbd o, NbdTimer timer, int extraConnections, NbdClient.Tls tls)
            throws IOException {
        String context = o.xDirtyBitmap() != null ? o.xDirtyBitmap() : Nbd.BASE_ALLOCATION;
        NbdConnector connector = new NbdConnector(o.server(), o.export(), List.of(context), tls);
        NbdLink link = NbdLink.open(connector, timer, TimeUnit.SECONDS.toNanos(o.openTimeout()),
                TimeUnit.SECONDS.toNanos(o.reconnectDelay()), !o.common().readOnly() && !o.autoReadOnly());
        try {
            NbdClient first = link.current();
            boolean readOnly = o.common().readOnly() || (o.autoReadOnly() && first.readOnly());
            if (o.xDirtyBitmap() != null && !first.metaContexts().containsKey(o.xDirtyBitmap())) {
                // nbd_client_handshake: "requested x-dirty-bitmap ... not found", -EINVAL (observed text)
                throw new IoError(Errno.EINVAL, "Could not open image: Invalid argument");
            }
            if (!readOnly && first.readOnly()) {
                // nbd_open: bdrv_apply_auto_read_only() fails with -EACCES (observed on QEMU 7.2)
                throw new IoError(Errno.EACCES, "Could not open image: Permission denied");
            }
            if (!readOnly) {
                link.requireWritable();
            }
            NbdDriver d = new NbdDriver(link, NbdFilenames.filename(o.server(), o.export()), readOnly, first, context);
            d.joinExtraConnections(extraConnections, connector, timer, TimeUnit.SECONDS.toNanos(o.reconnectDelay()),
                    !readOnly);
            return d;
        } catch (IOException | RuntimeException e) {
            link.close();
            throw e;
        }
    }

    /** The connection keeper (tests wait on its reconnects). */
    NbdLink link() {
        return link;
    }

    private boolean has(int flag) {
        return (flags & flag) != 0;
    }

    @Override
    public String driverName() {
        return "nbd";
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        while (dst.hasRemaining()) {
            int n = Math.min(dst.remaining(), maxBlock);
            ByteBuffer part = dst.slice(dst.position(), n);
            long at = offset;
            pick().call(c -> {
                c.read(at, part.duplicate());
                return null;
            });
            dst.position(dst.position() + n);
            offset += n;
        }
    }

    @Override
    public void write(long offset, ByteBuffer src, boolean fua) throws IOException {
        boolean passFua = fua && has(Nbd.FLAG_SEND_FUA);
        while (src.hasRemaining()) {
            int n = Math.min(src.remaining(), maxBlock);
            ByteBuffer part = src.slice(src.position(), n);
            long at = offset;
            pick().call(c -> {
                c.write(at, part, passFua);
                return null;
            });
            src.position(src.position() + n);
            offset += n;
        }
        if (fua && !passFua) {
            flush(); // block/io.c emulates FUA with a flush when the driver cannot pass it
        }
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        if (!has(Nbd.FLAG_SEND_WRITE_ZEROES)) {
            writeZeroBuffers(offset, length);
            return;
        }
        long end = offset + length;
        long step = MAX_RANGE / alignment * alignment;
        for (long at = offset; at < end; at += step) {
            long pos = at;
            long n = Math.min(step, end - at);
            pick().call(c -> {
                c.writeZeroes(pos, n, mayUnmap, false);
                return null;
            });
        }
    }

    private void writeZeroBuffers(long offset, long length) throws IOException {
        ByteBuffer zeroes = ByteBuffer.allocate((int) Math.min(length, Math.min(ZERO_CHUNK, maxBlock)));
        long end = offset + length;
        for (long at = offset; at < end; at += zeroes.capacity()) {
            int n = (int) Math.min(zeroes.capacity(), end - at);
            write(at, zeroes.duplicate().limit(n), false);
        }
    }

    @Override
    public void discard(long offset, long length) throws IOException {
        if (!has(Nbd.FLAG_SEND_TRIM)) {
            return; // nbd_client_co_pdiscard: success without a request
        }
        long end = offset + length;
        long step = MAX_RANGE / alignment * alignment;
        for (long at = offset; at < end; at += step) {
            long pos = at;
            long n = Math.min(step, end - at);
            pick().call(c -> {
                c.trim(pos, n);
                return null;
            });
        }
    }

    @Override
    public void flush() throws IOException {
        if (!has(Nbd.FLAG_SEND_FLUSH)) {
            return; // nbd_client_co_flush: success without a request
        }
        pick().call(c -> {
            c.flush();
            return null;
        });
    }

    @Override
    public long length() {
        return link.size();
    }

    /**
     * One extent from the server's context: ZERO when it reads as zeroes (NBD_STATE_ZERO), else
     * UNALLOCATED for a hole (NBD_STATE_HOLE; for a dirty-bitmap context "dirty", which QEMU's
     * client shows the same way: "present": false), else DATA.
     */
    @Override
    public Extent status(long offset, long length) throws IOException {
        if (statusContext == null) {
            return new Extent(offset, length, Allocation.DATA);
        }
        long ask = Math.min(length, MAX_RANGE / alignment * alignment);
        NbdClient.Extent e = pick().call(c -> {
            Integer id = c.metaContexts().get(statusContext);
            if (id == null) {
                throw new IoError(Errno.EIO, "the NBD server no longer offers " + statusContext);
            }
            Map<Integer, List<NbdClient.Extent>> all = c.blockStatus(offset, ask, true);
            List<NbdClient.Extent> list = all.get(id);
            if (list == null || list.isEmpty()) {
                throw new IoError(Errno.EIO, "the NBD server sent no extent for " + statusContext);
            }
            return list.getFirst();
        });
        Allocation a = (e.flags() & Nbd.STATE_ZERO) != 0 ? Allocation.ZERO
                : (e.flags() & Nbd.STATE_HOLE) != 0 ? Allocation.UNALLOCATED : Allocation.DATA;
        return new Extent(offset, Math.min(e.length(), length), a);
    }

    @Override
    public Capabilities capabilities() {
        return new Capabilities(readOnly, has(Nbd.FLAG_SEND_TRIM), has(Nbd.FLAG_SEND_WRITE_ZEROES),
                has(Nbd.FLAG_SEND_FUA), alignment, false);
    }

    @Override
    public void close() {
        synchronized (links) {
            closed = true;
        }
        for (Thread t : joining) {
            t.interrupt(); // a handshake still under way: the channel closes
        }
        for (NbdLink l : links) {
            l.close();
        }
        onClose.run();
    }

    @Override
    public String filename() {
        return filename;
    }

    /** block/nbd.c has no get_allocated_file_size: query-block shows no actual-size. */
    @Override
    public OptionalLong allocatedFileSize() {
        return OptionalLong.empty();
    }

    /** block/nbd.c has no bdrv_get_info: no dirty-flag, no cluster-size. */
    @Override
    public Optional<Boolean> dirtyFlag() {
        return Optional.empty();
    }
}
