package jblockd.qmp;

import java.io.Closeable;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;

import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;


/**
 * A QMP listening socket (UNIX or TCP) with one thread per client (a platform thread, unlike
 * STYLE.md §2 step 1: see {@code acceptLoop} for the measured reason). A UNIX socket is
 * created with mode 0600: it is bound inside a private 0700 directory next to the target,
 * restricted, then renamed into place, so no other user can ever connect to it; a stale socket
 * file at the path is replaced (a regular file is not).
 * {@link #close()} stops accepting, lets each session flush what is queued (quit's reply),
 * closes them and removes the socket file.
 */
public final class QmpServer implements Closeable {
    /** Largest JSON text a client may send (QEMU allows 64 MiB; nothing we accept needs 1 MiB). */
    public static final int MAX_MESSAGE = 1 << 20;
    /** Outbox bound per client, in messages (events and replies). */
    public static final int OUTBOX_CAPACITY = 8192;

    private final QmpAddress address;
    private final QmpDispatcher dispatcher;
    private final EventFanout fanout;
    private final byte[] greeting;
    private final Set<QmpSession> sessions = ConcurrentHashMap.newKeySet();
    private final AtomicLong clientIds = new AtomicLong();
    private ServerSocketChannel server;
    private Path unixPath;
    private volatile boolean closing;
    private Thread acceptor;

    public QmpServer(QmpAddress address, QmpDispatcher dispatcher, EventFanout fanout, String qemuPackage,
                     int major, int minor, int micro) {
        this.address = address;
        this.dispatcher = dispatcher;
        this.fanout = fanout;
        this.greeting = dispatcher.json().write(greeting(qemuPackage, major, minor, micro));
    }

    /**
     * QEMU's greeting, without the {@code oob} capability (out-of-band execution is not
     * implemented, so it is not offered; qmp_capabilities refuses it).
     */
    private static ObjectNode greeting(String pkg, int major, int minor, int micro) {
        ObjectNode g = JsonNodeFactory.instance.objectNode();
        ObjectNode qmp = g.putObject("QMP");
        ObjectNode version = qmp.putObject("version");
        ObjectNode qemu = version.putObject("qemu");
        qemu.put("micro", micro);
        qemu.put("minor", minor);
        qemu.put("major", major);
        version.put("package", pkg);
        qmp.putArray("capabilities");
        return g;
    }

    /** Binds and starts accepting. */
    public void start() throws IOException {
        switch (address) {
            case QmpAddress.Unix u -> bindUnix(u.path());
            case QmpAddress.Tcp t -> {
                server = ServerSocketChannel.open();
                server.bind(new InetSocketAddress(t.host(), t.port()));
            }
        }
        acceptor = Thread.ofVirtual().name("qmp-accept " + address).start(this::acceptLoop);
    }

    /** sun_path holds 108 bytes including the terminating NUL. */
    private static final int MAX_UNIX_PATH = 107;

    private void bindUnix(Path path) throws IOException {
        Path abs = path.toAbsolutePath();
        if (Files.exists(abs, java.nio.file.LinkOption.NOFOLLOW_LINKS) && !isSocket(abs)) {
            throw new IOException("Failed to bind socket to " + path + ": Address already in use");
        }
        if (abs.toString().getBytes(java.nio.charset.StandardCharsets.UTF_8).length > MAX_UNIX_PATH) {
            throw new IOException("Failed to bind socket to " + path + ": path too long for a UNIX socket");
        }
        Path dir = Files.createTempDirectory(abs.getParent(), ".qmp",
                PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")));
        Path tmp = dir.resolve("s");
        try {
            server = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
            if (tmp.toString().getBytes(java.nio.charset.StandardCharsets.UTF_8).length <= MAX_UNIX_PATH) {
                server.bind(UnixDomainSocketAddress.of(tmp));
                Files.setPosixFilePermissions(tmp, PosixFilePermissions.fromString("rw-------"));
                Files.move(tmp, abs, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
            } else {
                // the private directory's name does not fit: bind in place, restrict at once
                Files.deleteIfExists(abs);
                server.bind(UnixDomainSocketAddress.of(abs));
                Files.setPosixFilePermissions(abs, PosixFilePermissions.fromString("rw-------"));
            }
            unixPath = abs;
        } catch (IOException e) {
            if (server != null) {
                server.close();
            }
            Files.deleteIfExists(tmp);
            throw new IOException("Failed to bind socket to " + path + ": " + e.getMessage(), e);
        } finally {
            Files.deleteIfExists(dir);
        }
    }

    private static boolean isSocket(Path p) {
        try {
            Object mode = Files.getAttribute(p, "unix:mode", java.nio.file.LinkOption.NOFOLLOW_LINKS);
            return mode instanceof Integer m && (m & 0170000) == 0140000;
        } catch (IOException | UnsupportedOperationException | IllegalArgumentException e) {
            return false;
        }
    }

    public QmpAddress address() {
        return address;
    }

    /** The bound address (the real port when tcp port 0 was asked for). */
    public SocketAddress localAddress() throws IOException {
        return server.getLocalAddress();
    }

    /** The TCP port actually bound, or -1 for a UNIX socket. */
    public int port() {
        try {
            return server.getLocalAddress() instanceof InetSocketAddress i ? i.getPort() : -1;
        } catch (IOException e) {
            return -1;
        }
    }

    public int clientCount() {
        return sessions.size();
    }

    private void acceptLoop() {
        while (!closing) {
            SocketChannel ch;
            try {
                ch = server.accept();
            } catch (IOException e) {
                if (!closing) {
                    System.err.println("jblockd: QMP accept on " + address + " failed: " + e.getMessage());
                }
                return;
            }
            String peer = address + "#" + clientIds.incrementAndGet();
            QmpSession s = new QmpSession(ch, peer, dispatcher, fanout, greeting, MAX_MESSAGE,
                    OUTBOX_CAPACITY, sessions::remove);
            sessions.add(s);
            if (closing) {
                s.close();
                return;
            }
            // The one place we own a connection with a platform thread, on purpose: a QMP
            // client (libvirt keeps one session) mostly waits, and each command then pays the
            // wake-up. A platform thread blocked in read(2) is woken by the kernel directly; a
            // virtual one needs two wake-ups (poller thread, then carrier), which on an idle
            // 2-vCPU machine cost ~150-200 us more per command (bench/qmp-bench.sh: a command on
            // an idle daemon 83-142 us vs 272-302 us, QEMU 256-341 us). Sessions are few and
            // long-lived; NBD connections, request handlers, jobs and the session's event
            // writer stay virtual.
            Thread.ofPlatform().daemon(true).name("qmp " + peer).start(s::run);
        }
    }

    /** Stops accepting, flushes and closes every session, removes the UNIX socket. Idempotent. */
    @Override
    public void close() {
        if (closing) {
            return;
        }
        closing = true;
        try {
            if (server != null) {
                server.close();
            }
        } catch (IOException ignored) {
            // closing anyway
        }
        List<Thread> closers = sessions.stream()
                .map(s -> Thread.ofVirtual().start(() -> s.closeGracefully(1000)))
                .toList();
        for (Thread t : closers) {
            try {
                t.join();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        if (unixPath != null) {
            try {
                Files.deleteIfExists(unixPath);
            } catch (IOException e) {
                System.err.println("jblockd: cannot remove " + unixPath + ": " + e.getMessage());
            }
        }
    }

}
