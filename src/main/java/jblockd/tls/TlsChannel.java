package jblockd.tls;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.ByteChannel;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.GatheringByteChannel;
import java.util.concurrent.locks.ReentrantLock;

import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLEngineResult;
import javax.net.ssl.SSLEngineResult.HandshakeStatus;
import javax.net.ssl.SSLException;

/**
 * A blocking byte channel through an {@link SSLEngine} over another blocking channel (a TCP or
 * UNIX {@code SocketChannel}: the JDK's {@code SSLSocket} cannot wrap a UNIX socket). Used by the
 * NBD server and client after {@code NBD_OPT_STARTTLS}, so their readers and writers stay the
 * same over TLS.
 * <p>
 * Threads: one reader and any number of writers at once (SSLEngine allows wrap and unwrap to
 * run concurrently); writers are serialised by a lock, which the reader also takes when the
 * engine asks it to send something (a TLS 1.3 key update). The record buffers are this
 * channel's own, allocated once: a WRITE payload large enough is unwrapped straight into the
 * caller's (pooled) buffer, and writes gather the caller's buffers into records with no copy
 * of their own. The record buffers are direct: heap ones made a loopback pipe of this class
 * alone faster (jblockd.bench.TlsChannelBench, 1.8-1.9 against 1.35-1.4 GB/s) but a real TLS
 * mirror across two network namespaces slower (bench/remote-bench.sh case 2, 1 GiB: 143-170
 * MiB/s with heap buffers against 203-210 MiB/s with direct ones, alternating in one run), so
 * they stayed direct. {@link #close()} sends close_notify and closes the underlying channel.
 */
public final class TlsChannel implements ByteChannel, GatheringByteChannel {
    private static final ByteBuffer EMPTY = ByteBuffer.allocate(0);

    private final ByteChannel raw;
    private final SSLEngine engine;
    /** Records read from {@link #raw}, not yet unwrapped (fill mode). */
    private ByteBuffer netIn;
    /** Plaintext unwrapped but not yet read (read mode). */
    private ByteBuffer appIn;
    /** Records to send; filled and drained under {@link #writeLock}. */
    private final ByteBuffer netOut;
    private final ReentrantLock writeLock = new ReentrantLock();
    private final ReentrantLock readLock = new ReentrantLock();
    /**
     * The session's record and plaintext sizes, read once after the handshake: getSession()
     * takes the engine's lock, which a writer's wrap holds (a per-call lookup cost the reader
     * a wait behind every writer).
     */
    private int packetSize;
    private int applicationSize;

    private TlsChannel(ByteChannel raw, SSLEngine engine) {
        this.raw = raw;
        this.engine = engine;
        int packet = engine.getSession().getPacketBufferSize();
        this.netIn = ByteBuffer.allocateDirect(4 * packet);
        this.appIn = ByteBuffer.allocateDirect(engine.getSession().getApplicationBufferSize());
        appIn.limit(0);
        // several records per write(2): a 2 MiB read reply is about 128 records
        this.netOut = ByteBuffer.allocateDirect(8 * packet);
    }

    /**
     * Runs the TLS handshake on {@code raw} with {@code engine} (client or server mode already
     * set) and returns the channel, or throws the engine's {@link SSLException} after sending
     * its alert (so the peer learns why).
     */
    public static TlsChannel handshake(ByteChannel raw, SSLEngine engine) throws IOException {
        TlsChannel t = new TlsChannel(raw, engine);
        engine.beginHandshake();
        t.runHandshake();
        t.packetSize = engine.getSession().getPacketBufferSize();
        t.applicationSize = engine.getSession().getApplicationBufferSize();
        return t;
    }

    /** The negotiated session (protocol, peer certificates). */
    public javax.net.ssl.SSLSession session() {
        return engine.getSession();
    }

    private void runHandshake() throws IOException {
        HandshakeStatus hs = engine.getHandshakeStatus();
        try {
            while (hs != HandshakeStatus.FINISHED && hs != HandshakeStatus.NOT_HANDSHAKING) {
                hs = switch (hs) {
                    case NEED_WRAP -> wrapControl();
                    case NEED_UNWRAP, NEED_UNWRAP_AGAIN -> unwrapControl();
                    case NEED_TASK -> runTasks();
                    default -> throw new SSLException("unexpected handshake status " + hs);
                };
            }
        } catch (SSLException e) {
            sendPendingAlert();
            throw e;
        }
    }

    /** After a failure the engine holds an alert for the peer; send it if the socket takes it. */
    private void sendPendingAlert() {
        try {
            engine.closeOutbound();
            for (int i = 0; i < 4 && !engine.isOutboundDone(); i++) {
                wrapControl();
            }
        } catch (IOException | RuntimeException ignored) {
            // the peer may be gone already
        }
    }

    private HandshakeStatus runTasks() {
        Runnable task;
        while ((task = engine.getDelegatedTask()) != null) {
            task.run();
        }
        return engine.getHandshakeStatus();
    }

    /** Wraps and sends what the engine wants to send by itself (handshake, alerts, key updates). */
    private HandshakeStatus wrapControl() throws IOException {
        writeLock.lock();
        try {
            netOut.clear();
            SSLEngineResult r = engine.wrap(EMPTY, netOut);
            netOut.flip();
            writeNet();
            return r.getHandshakeStatus();
        } finally {
            writeLock.unlock();
        }
    }

    /** One unwrap of handshake records (reading more when a record is incomplete). */
    private HandshakeStatus unwrapControl() throws IOException {
        while (true) {
            netIn.flip();
            appIn.compact();
            SSLEngineResult r;
            try {
                r = engine.unwrap(netIn, appIn);
            } finally {
                appIn.flip();
                netIn.compact();
            }
            switch (r.getStatus()) {
                case OK -> {
                    return r.getHandshakeStatus();
                }
                case BUFFER_UNDERFLOW -> fill();
                case BUFFER_OVERFLOW -> growAppIn();
                case CLOSED -> throw new SSLException("the peer closed the TLS session during the handshake");
                default -> throw new SSLException("unexpected unwrap status " + r.getStatus());
            }
        }
    }

    /** Reads more records; the peer closing here is an EOF. */
    private void fill() throws IOException {
        if (!netIn.hasRemaining()) {
            ByteBuffer bigger = ByteBuffer.allocateDirect(netIn.capacity() * 2);
            netIn.flip();
            bigger.put(netIn);
            netIn = bigger;
        }
        if (raw.read(netIn) < 0) {
            throw new EOFException("connection closed by peer");
        }
    }

    private void growAppIn() {
        ByteBuffer bigger = ByteBuffer.allocateDirect(Math.max(appIn.capacity() * 2,
                engine.getSession().getApplicationBufferSize()));
        bigger.put(appIn).flip();
        appIn = bigger;
    }

    private void writeNet() throws IOException {
        while (netOut.hasRemaining()) {
            raw.write(netOut);
        }
    }

    @Override
    public int read(ByteBuffer dst) throws IOException {
        readLock.lock();
        try {
            while (true) {
                if (appIn.hasRemaining()) {
                    int n = Math.min(appIn.remaining(), dst.remaining());
                    dst.put(appIn.slice(appIn.position(), n));
                    appIn.position(appIn.position() + n);
                    return n;
                }
                if (!dst.hasRemaining()) {
                    return 0;
                }
                // a large read takes the plaintext straight into the caller's buffer
                boolean direct = dst.remaining() >= applicationSize;
                SSLEngineResult r;
                netIn.flip();
                if (direct) {
                    try {
                        r = engine.unwrap(netIn, dst);
                    } finally {
                        netIn.compact();
                    }
                } else {
                    appIn.clear();
                    try {
                        r = engine.unwrap(netIn, appIn);
                    } finally {
                        appIn.flip();
                        netIn.compact();
                    }
                }
                switch (r.getStatus()) {
                    case OK -> {
                        afterUnwrap(r.getHandshakeStatus());
                        if (direct && r.bytesProduced() > 0) {
                            return r.bytesProduced();
                        }
                    }
                    case BUFFER_UNDERFLOW -> {
                        try {
                            fill();
                        } catch (EOFException e) {
                            return -1;
                        }
                    }
                    case BUFFER_OVERFLOW -> growAppIn();
                    case CLOSED -> {
                        // close_notify: answer it, then end of stream
                        afterUnwrap(r.getHandshakeStatus());
                        return -1;
                    }
                    default -> throw new SSLException("unexpected unwrap status " + r.getStatus());
                }
            }
        } finally {
            readLock.unlock();
        }
    }

    /** Post-handshake messages (TLS 1.3 tickets, key updates) may ask for a task or a reply. */
    private void afterUnwrap(HandshakeStatus hs) throws IOException {
        while (true) {
            switch (hs) {
                case NEED_TASK -> hs = runTasks();
                case NEED_WRAP -> {
                    if (engine.isOutboundDone()) {
                        return;
                    }
                    hs = wrapControl();
                }
                default -> {
                    return;
                }
            }
        }
    }

    @Override
    public int write(ByteBuffer src) throws IOException {
        return (int) write(new ByteBuffer[] {src}, 0, 1);
    }

    @Override
    public long write(ByteBuffer[] srcs) throws IOException {
        return write(srcs, 0, srcs.length);
    }

    @Override
    public long write(ByteBuffer[] srcs, int offset, int length) throws IOException {
        writeLock.lock();
        try {
            int packet = packetSize;
            long total = 0;
            while (remaining(srcs, offset, length)) {
                netOut.clear();
                while (netOut.remaining() >= packet && remaining(srcs, offset, length)) {
                    SSLEngineResult r = engine.wrap(srcs, offset, length, netOut);
                    if (r.getStatus() == SSLEngineResult.Status.CLOSED) {
                        throw new ClosedChannelException();
                    }
                    if (r.getStatus() != SSLEngineResult.Status.OK) {
                        break;
                    }
                    total += r.bytesConsumed();
                    if (r.getHandshakeStatus() == HandshakeStatus.NEED_TASK) {
                        runTasks();
                    }
                }
                netOut.flip();
                writeNet();
            }
            return total;
        } finally {
            writeLock.unlock();
        }
    }

    private static boolean remaining(ByteBuffer[] srcs, int offset, int length) {
        for (int i = offset; i < offset + length; i++) {
            if (srcs[i].hasRemaining()) {
                return true;
            }
        }
        return false;
    }

    @Override
    public boolean isOpen() {
        return raw.isOpen();
    }

    /** Sends close_notify (best effort) and closes the underlying channel. */
    @Override
    public void close() throws IOException {
        try {
            if (raw.isOpen() && writeLock.tryLock()) {
                try {
                    engine.closeOutbound();
                    netOut.clear();
                    engine.wrap(EMPTY, netOut);
                    netOut.flip();
                    writeNet();
                } catch (IOException | RuntimeException ignored) {
                    // closing anyway
                } finally {
                    writeLock.unlock();
                }
            }
        } finally {
            raw.close();
        }
    }
}
