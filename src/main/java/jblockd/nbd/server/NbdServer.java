package jblockd.nbd.server;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.net.StandardProtocolFamily;
import java.net.StandardSocketOptions;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Semaphore;
import java.util.logging.Level;
import java.util.logging.Logger;

import jblockd.tls.ServerTls;

/**
 * The NBD server of one daemon (QEMU's blockdev-nbd.c): at most one listening socket (TCP or
 * UNIX), a virtual thread accepting, one platform thread reading each connection, request
 * handlers on a {@link RequestExecutor}, and the exports by name.
 * Exports exist only while the server runs; {@link #stop()} closes every connection and drops
 * every export, like {@code nbd-server-stop}.
 */
public final class NbdServer {
    private static final Logger LOG = Logger.getLogger(NbdServer.class.getName());

    /**
     * Requests served concurrently per connection; the reader waits when all are busy. 64 is
     * what libnbd clients (nbdcopy) keep in flight by default.
     */
    static final int MAX_IN_FLIGHT = 64;
    /**
     * Payload bytes in flight per connection, in KiB: bounds memory (64 requests of 32 MiB
     * would be 2 GiB). A request larger than the budget takes all of it.
     */
    static final int MAX_IN_FLIGHT_KIB = 128 * 1024;

    private final Map<String, NbdExport> exportsByName = new LinkedHashMap<>();
    private final Set<NbdConnection> connections = ConcurrentHashMap.newKeySet();
    private final BufferPool buffers = new BufferPool(256L << 20);
    private ServerSocketChannel listener;
    private Path unixPath;
    private Thread acceptThread;
    private Semaphore connectionSlots;
    private RequestExecutor requests;
    /** TLS of a TLS-only server (nbd-server-start tls-creds, tls-authz), null when plain. */
    private ServerTls tls;

    public synchronized boolean running() {
        return listener != null;
    }

    /**
     * Listens on {@code address} (an {@link InetSocketAddress} or {@link UnixDomainSocketAddress});
     * {@code maxConnections} 0 means unlimited. A stale UNIX socket file is replaced (QEMU unlinks
     * it too).
     */
    public synchronized void start(SocketAddress address, int maxConnections) throws IOException {
        start(address, maxConnections, null);
    }

    /**
     * As {@link #start(SocketAddress, int)}; with {@code tls} every client must upgrade with
     * NBD_OPT_STARTTLS before any other option (and pass its identity check, if any).
     */
    public synchronized void start(SocketAddress address, int maxConnections, ServerTls tls)
            throws IOException {
        if (listener != null) {
            throw new IllegalStateException("NBD server already running");
        }
        ServerSocketChannel ch;
        if (address instanceof UnixDomainSocketAddress u) {
            Files.deleteIfExists(u.getPath());
            ch = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
            try {
                ch.bind(u);
            } catch (IOException e) {
                ch.close();
                throw e;
            }
            unixPath = u.getPath();
        } else {
            ch = ServerSocketChannel.open();
            try {
                ch.setOption(StandardSocketOptions.SO_REUSEADDR, true);
                ch.bind(address);
            } catch (IOException e) {
                ch.close();
                throw e;
            }
            unixPath = null;
        }
        listener = ch;
        this.tls = tls;
        connectionSlots = maxConnections > 0 ? new Semaphore(maxConnections) : null;
        // One warm thread per CPU: more only trade work done in place for hand-offs. On 2 CPUs,
        // fio's 4 KiB random reads ran 1.6-1.8x qemu-nbd's IOPS so, 1.3-1.5x with 4 per CPU.
        requests = new RequestExecutor(Runtime.getRuntime().availableProcessors());
        ServerSocketChannel l = ch;
        Semaphore slots = connectionSlots;
        RequestExecutor r = requests;
        acceptThread = Thread.ofVirtual().name("nbd-accept").start(() -> acceptLoop(l, slots, r, tls));
    }

    /** The bound address (useful with port 0). */
    public synchronized SocketAddress localAddress() throws IOException {
        return listener == null ? null : listener.getLocalAddress();
    }

    /** Whether the running server requires TLS. */
    public synchronized boolean tlsRequired() {
        return tls != null;
    }

    private void acceptLoop(ServerSocketChannel l, Semaphore slots, RequestExecutor requests, ServerTls tls) {
        while (l.isOpen()) {
            try {
                if (slots != null) {
                    // QEMU stops accepting at max-connections; further clients wait in the backlog
                    slots.acquire();
                }
                SocketChannel c;
                try {
                    c = l.accept();
                } catch (IOException e) {
                    if (slots != null) {
                        slots.release();
                    }
                    throw e;
                }
                if (c.getRemoteAddress() instanceof InetSocketAddress) {
                    c.setOption(StandardSocketOptions.TCP_NODELAY, true);
                }
                socketBuffers(c);
                NbdConnection conn = new NbdConnection(this, c, buffers, requests, tls);
                connections.add(conn);
                // A platform thread, not a virtual one: a blocked read(2) is woken once, by the
                // kernel, where a virtual thread needs the JDK's poller and then a carrier. With
                // warm request threads but a virtual reader, nbdcopy writes over 2 connections
                // ran 0.91-0.93x qemu-nbd's speed here (see RequestExecutor for the figures with
                // this one). Connections are few (one to a handful per guest) and long-lived.
                Thread.ofPlatform().daemon().name("nbd-conn").start(() -> {
                    try {
                        conn.run();
                    } finally {
                        connections.remove(conn);
                        if (slots != null) {
                            slots.release();
                        }
                        synchronized (departures) {
                            departures.notifyAll();
                        }
                    }
                });
            } catch (InterruptedException e) {
                return;
            } catch (IOException e) {
                if (l.isOpen()) {
                    LOG.log(Level.WARNING, "NBD accept failed", e);
                }
                return;
            }
        }
    }

    /**
     * Socket buffers big enough for a whole typical request or reply (nbdcopy and qemu use
     * 256 KiB - 2 MiB): a reply that does not fit makes the writing virtual thread park and wait
     * for the poller, which costs more CPU than the copy itself. The kernel caps the request at
     * net.core.wmem_max / rmem_max; a refusal is harmless.
     */
    private static void socketBuffers(SocketChannel c) {
        try {
            c.setOption(StandardSocketOptions.SO_SNDBUF, SOCKET_BUFFER);
            c.setOption(StandardSocketOptions.SO_RCVBUF, SOCKET_BUFFER);
        } catch (IOException | UnsupportedOperationException e) {
            LOG.log(Level.FINE, "socket buffer size not set", e);
        }
    }

    private static final int SOCKET_BUFFER = 4 << 20;

    /** nbd-server-stop: closes the listener and every connection, drops every export. */
    public void stop() {
        List<NbdConnection> toClose;
        synchronized (this) {
            if (listener != null) {
                try {
                    listener.close();
                } catch (IOException ignored) {
                    // closing anyway
                }
                listener = null;
                tls = null;
                if (unixPath != null) {
                    try {
                        Files.deleteIfExists(unixPath);
                    } catch (IOException ignored) {
                        // best effort
                    }
                }
            }
            for (NbdExport e : exportsByName.values()) {
                e.markShuttingDown();
            }
            exportsByName.clear();
            toClose = new ArrayList<>(connections);
        }
        for (NbdConnection c : toClose) {
            c.close();
        }
        RequestExecutor r = requests;
        if (r != null) {
            r.close();
        }
        Thread t = acceptThread;
        if (t != null) {
            t.interrupt();
        }
    }

    public synchronized void addExport(NbdExport export) {
        if (exportsByName.containsKey(export.name())) {
            throw new IllegalArgumentException("NBD server already has export named '" + export.name() + "'");
        }
        exportsByName.put(export.name(), export);
    }

    public synchronized Optional<NbdExport> export(String name) {
        return Optional.ofNullable(exportsByName.get(name));
    }

    public synchronized List<NbdExport> exports() {
        return List.copyOf(exportsByName.values());
    }

    /** Signalled whenever a connection has ended (see {@link #clientCountAfter}). */
    private final Object departures = new Object();

    /**
     * The clients attached to the export (QEMU's refcount - 1) once those already leaving have gone, waiting at most
     * {@code grace}: a client that hung up just before (its connection thread has not yet run
     * to see the end) is not in use. QEMU's single event loop sees such a hang-up before the
     * next QMP command by the order it polls in; jblockd's connection threads need the wait.
     */
    public int clientCountAfter(NbdExport export, java.time.Duration grace) throws InterruptedException {
        long deadline = System.nanoTime() + grace.toNanos();
        synchronized (departures) {
            while (true) {
                int n = export.connections().size();
                long left = deadline - System.nanoTime();
                if (n == 0 || left <= 0) {
                    return n;
                }
                departures.wait(Math.max(1, left / 1_000_000));
            }
        }
    }

    /**
     * Removes the export. {@code hard}: its clients are disconnected; otherwise (safe) the caller
     * has checked that none is connected. New clients can no longer find it either way.
     */
    public void removeExport(NbdExport export, boolean hard) {
        synchronized (this) {
            export.markShuttingDown();
            exportsByName.remove(export.name(), export);
        }
        if (hard) {
            for (NbdConnection c : List.copyOf(export.connections())) {
                c.close();
            }
        }
    }

    /** Exports a client may pick (not shutting down). */
    synchronized NbdExport findForClient(String name) {
        NbdExport e = exportsByName.get(name);
        return e == null || e.shuttingDown() ? null : e;
    }

    /** Attaches a connection entering transmission; false when the export went away meanwhile. */
    synchronized boolean attach(NbdExport export, NbdConnection conn) {
        if (export.shuttingDown() || exportsByName.get(export.name()) != export) {
            return false;
        }
        export.connections().add(conn);
        return true;
    }
}
