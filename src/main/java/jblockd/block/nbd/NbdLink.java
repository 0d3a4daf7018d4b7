package jblockd.block.nbd;

import java.io.IOException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

import jblockd.block.Errno;
import jblockd.block.IoError;
import jblockd.nbd.client.NbdClient;

/**
 * The nbd node's connection to its server, kept up as QEMU 7.2's block/nbd.c does:
 * <ul>
 *   <li>{@link #open}: the first connection, retried for {@code open-timeout} (0: one attempt),
 *       attempts spaced 1, 2, 4, ... 16 s apart (nbd/client-connection.c connect_thread_func),
 *       the last attempt's error when time is up;</li>
 *   <li>after a drop, a background reconnect with the same spacing, for as long as the node
 *       lives. For {@code reconnect-delay} seconds after the drop requests wait for it, and a
 *       request that was in flight is sent again on the new connection (nbd_co_request's retry
 *       while nbd_client_will_reconnect()); after that, or always with a delay of 0, requests fail
 *       with EIO at once until a reconnect succeeds (NBD_CLIENT_CONNECTING_NOWAIT);</li>
 *   <li>beyond QEMU: a request that finds no connection while no attempt is under way (the
 *       background reconnect is between attempts, up to 16 s apart) makes one attempt itself
 *       before failing, and requests that arrive during an attempt wait for its outcome, so a
 *       job resumed after the server came back goes on at once instead of failing again until
 *       the next background attempt. (An attempt is as long as a connect: immediate on an
 *       unreachable network or a refused port.)</li>
 * </ul>
 * A new connection must show the same size and, for a writable node, be writable, else it is
 * dropped and the reconnect goes on. Thread-safe; requests run concurrently on the current
 * {@link NbdClient}, which multiplexes them.
 */
final class NbdLink implements AutoCloseable {
    private static final long SECOND = TimeUnit.SECONDS.toNanos(1);
    private static final long MAX_BACKOFF = 16 * SECOND;

    /** One request on a connection. */
    @FunctionalInterface
    interface Request<T> {
        T run(NbdClient c) throws IOException;
    }

    private final NbdConnector connector;
    private final NbdTimer timer;
    private final long reconnectDelay;
    /** Every reconnect must be writable (set once the node's read-only state is known). */
    private volatile boolean needWrite;
    private final long size;

    private final ReentrantLock lock = new ReentrantLock();
    private final Condition changed = lock.newCondition();
    /** Current connection; null while reconnecting. */
    private NbdClient client;
    /** Inside the reconnect-delay window: requests wait instead of failing. */
    private boolean waiting;
    private boolean reconnecting;
    /** A connection attempt (background or a request's own) is under way: no second one. */
    private boolean attempting;
    /** The reconnect under way (interrupted by close: a connect or handshake that hangs ends). */
    private Thread reconnector;
    private boolean closed;
    private NbdTimer.Scheduled window;
    private IoError lastFailure;
    private final CompletableFuture<Void> closing = new CompletableFuture<>();

    private NbdLink(NbdConnector connector, NbdTimer timer, long reconnectDelayNanos, NbdClient first,
                    boolean needWrite) {
        this.connector = connector;
        this.timer = timer;
        this.reconnectDelay = reconnectDelayNanos;
        this.needWrite = needWrite;
        this.size = first.size();
        install(first);
    }

    /**
     * Connects, retrying for {@code openTimeoutNanos}; the node is writable when
     * {@code needWrite} (every reconnect is held to it).
     */
    static NbdLink open(NbdConnector connector, NbdTimer timer, long openTimeoutNanos, long reconnectDelayNanos,
                        boolean needWrite) throws IoError {
        long deadline = timer.nanoTime() + openTimeoutNanos;
        long backoff = SECOND;
        CompletableFuture<Void> never = new CompletableFuture<>();
        while (true) {
            IoError failure;
            try {
                return new NbdLink(connector, timer, reconnectDelayNanos, connector.connect(), needWrite);
            } catch (IoError e) {
                failure = e;
            }
            long left = deadline - timer.nanoTime();
            if (openTimeoutNanos == 0 || left <= 0) {
                throw failure;
            }
            pause(timer, Math.min(backoff, left), never);
            backoff = Math.min(2 * backoff, MAX_BACKOFF);
            if (deadline - timer.nanoTime() <= 0) {
                throw failure;
            }
        }
    }

    /** Waits {@code nanos} on the timer, or until {@code abort} completes. */
    private static void pause(NbdTimer timer, long nanos, CompletableFuture<Void> abort) throws IoError {
        CompletableFuture<Void> due = new CompletableFuture<>();
        NbdTimer.Scheduled s = timer.schedule(nanos, () -> due.complete(null));
        try {
            CompletableFuture.anyOf(due, abort).get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IoError(Errno.ECANCELED, "interrupted while waiting to connect to the NBD server", e);
        } catch (ExecutionException e) {
            // abort completed exceptionally: treat as done
        } finally {
            s.cancel();
        }
    }

    /** From now on a reconnect to a read-only export does not count as connected. */
    void requireWritable() {
        needWrite = true;
    }

    /** The size of the export at the first connection (every reconnect must match it). */
    long size() {
        return size;
    }

    /** The connection now, or null while reconnecting (for its negotiated facts). */
    NbdClient current() {
        lock.lock();
        try {
            return client;
        } finally {
            lock.unlock();
        }
    }

    /**
     * Runs {@code r} on the current connection. A failure the server reports is thrown as it
     * is; a lost connection is retried on the next one while the reconnect-delay window is open,
     * and otherwise fails with EIO.
     */
    <T> T call(Request<T> r) throws IOException {
        while (true) {
            NbdClient c = acquire();
            try {
                return r.run(c);
            } catch (IoError e) {
                if (c.connected()) {
                    throw e; // the server answered: not a connection problem
                }
                lost(c);
                if (reconnectDelay == 0) {
                    throw new IoError(Errno.EIO, e.getMessage(), e);
                }
            }
        }
    }

    /** Waits until a connection is up (or the link closed): lets a caller see a background reconnect land. */
    void awaitConnected() throws InterruptedException {
        lock.lock();
        try {
            while (client == null && !closed) {
                changed.await();
            }
        } finally {
            lock.unlock();
        }
    }

    private NbdClient acquire() throws IoError {
        boolean tried = false;
        boolean waitedForAttempt = false;
        lock.lock();
        try {
            while (true) {
                if (closed) {
                    throw new IoError(Errno.EIO, "the NBD node is closed");
                }
                if (client != null) {
                    return client;
                }
                if (!waiting) {
                    if (!attempting && !tried) {
                        attempting = true;
                        tried = true;
                        lock.unlock();
                        try {
                            attempt();
                        } finally {
                            lock.lock();
                        }
                        continue;
                    }
                    if (attempting && !waitedForAttempt) {
                        // someone is connecting right now: its outcome decides for this request
                        // too (else a job's parallel copies fail while one of them reconnects)
                        waitedForAttempt = true;
                        while (attempting && client == null && !closed) {
                            changed.awaitUninterruptibly();
                        }
                        continue;
                    }
                    throw new IoError(Errno.EIO, "NBD connection lost; reconnecting"
                            + (lastFailure == null ? "" : " (" + lastFailure.getMessage() + ")"));
                }
                changed.awaitUninterruptibly();
            }
        } finally {
            lock.unlock();
        }
    }

    private void install(NbdClient c) {
        lock.lock();
        try {
            client = c;
            attempting = false;
            waiting = false;
            reconnecting = false;
            lastFailure = null;
            if (window != null) {
                window.cancel();
                window = null;
            }
            changed.signalAll();
        } finally {
            lock.unlock();
        }
        // not on the client's reader thread, which lost() would join by closing the client
        c.disconnected().thenRunAsync(() -> lost(c), r -> Thread.ofVirtual().name("nbd-lost").start(r));
    }

    /** The connection {@code c} is gone (called by its reader's end, or by a failed request). */
    private void lost(NbdClient c) {
        lock.lock();
        try {
            if (closed || client != c) {
                return; // already handled, or our own close
            }
            client = null;
            if (reconnectDelay > 0) {
                waiting = true;
                window = timer.schedule(reconnectDelay, this::windowEnded);
            }
            if (!reconnecting) {
                reconnecting = true;
                reconnector = Thread.ofVirtual().name("nbd-reconnect").start(this::reconnect);
            }
            changed.signalAll();
        } finally {
            lock.unlock();
        }
        closeQuietly(c);
    }

    private void windowEnded() {
        lock.lock();
        try {
            if (client == null) {
                waiting = false;
                changed.signalAll();
            }
        } finally {
            lock.unlock();
        }
    }

    /** The background reconnect: attempts spaced as at open, until one fits or the node closes. */
    private void reconnect() {
        long backoff = SECOND;
        while (true) {
            boolean mine;
            lock.lock();
            try {
                if (closed || client != null || reconnector != Thread.currentThread()) {
                    // closed, or a request's own attempt connected (and a later loss may have
                    // started a newer reconnect): this one is done
                    if (reconnector == Thread.currentThread()) {
                        reconnecting = false;
                    }
                    return;
                }
                mine = !attempting;
                attempting = true;
            } finally {
                lock.unlock();
            }
            if (mine && attempt()) {
                return;
            }
            try {
                pause(timer, backoff, closing);
            } catch (IoError e) {
                return;
            }
            backoff = Math.min(2 * backoff, MAX_BACKOFF);
        }
    }

    /**
     * One connection attempt, by whoever set {@link #attempting}; true when it connected (the
     * new connection installed), false with the failure remembered.
     */
    private boolean attempt() {
        try {
            NbdClient c = connector.connect();
            String misfit = misfit(c);
            if (misfit == null) {
                lock.lock();
                try {
                    if (closed) {
                        attempting = false;
                        closeQuietly(c);
                        return false;
                    }
                } finally {
                    lock.unlock();
                }
                install(c);
                return true;
            }
            closeQuietly(c);
            remember(new IoError(Errno.EIO, misfit));
        } catch (IoError e) {
            remember(e);
        }
        lock.lock();
        try {
            attempting = false;
            changed.signalAll();
        } finally {
            lock.unlock();
        }
        return false;
    }

    private String misfit(NbdClient c) {
        if (c.size() != size) {
            return "the NBD export's size changed from " + size + " to " + c.size() + " across a reconnect";
        }
        if (needWrite && c.readOnly()) {
            return "the NBD export became read-only across a reconnect";
        }
        return null;
    }

    private void remember(IoError e) {
        lock.lock();
        try {
            lastFailure = e;
        } finally {
            lock.unlock();
        }
    }

    /** Disconnects (NBD_CMD_DISC); waiting requests and a reconnect in progress give up. */
    @Override
    public void close() {
        NbdClient c;
        lock.lock();
        try {
            closed = true;
            c = client;
            client = null;
            if (window != null) {
                window.cancel();
            }
            if (reconnector != null) {
                reconnector.interrupt();
            }
            changed.signalAll();
        } finally {
            lock.unlock();
        }
        closing.complete(null);
        closeQuietly(c);
    }

    private static void closeQuietly(NbdClient c) {
        if (c != null) {
            try {
                c.close();
            } catch (IOException ignored) {
                // the connection is gone either way
            }
        }
    }
}
