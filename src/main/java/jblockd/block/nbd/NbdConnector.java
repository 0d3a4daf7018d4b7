package jblockd.block.nbd;

import java.io.IOException;
import java.net.ConnectException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.StandardSocketOptions;
import java.net.UnixDomainSocketAddress;
import java.net.UnknownHostException;
import java.nio.channels.SocketChannel;
import java.util.ArrayList;
import java.util.List;

import jblockd.block.BlockdevOptions;
import jblockd.block.Errno;
import jblockd.block.IoError;
import jblockd.nbd.client.NbdClient;
import jblockd.nbd.proto.Nbd;

/**
 * One connection attempt to an NBD server: resolve, connect, negotiate; every failure an
 * {@link IoError} with QEMU 7.2's text for the step that failed (reference/remote.md §3:
 * util/qemu-sockets.c inet_connect_saddr / unix_connect_saddr, nbd/client.c
 * nbd_handle_reply_err). Stateless apart from its options, so thread-safe.
 */
final class NbdConnector {
    private final BlockdevOptions.NbdServer server;
    private final NbdClient.Options options;
    private final boolean keepAlive;

    /** {@code tls}: STARTTLS with these credentials and name to verify; null for a plain connection. */
    NbdConnector(BlockdevOptions.NbdServer server, String export, List<String> contexts, NbdClient.Tls tls) {
        this.server = server;
        this.options = new NbdClient.Options(export == null ? "" : export, contexts, tls);
        this.keepAlive = server instanceof BlockdevOptions.NbdServer.Inet i && i.keepAlive();
    }

    NbdClient connect() throws IoError {
        SocketChannel ch = switch (server) {
            case BlockdevOptions.NbdServer.Unix u -> connectUnix(u);
            case BlockdevOptions.NbdServer.Inet i -> connectInet(i);
        };
        try {
            return NbdClient.negotiate(ch, options);
        } catch (IoError e) {
            // NbdClient.OptionRefused already words a refusal as QEMU's nbd/client.c does
            throw e;
        } catch (IOException e) {
            throw new IoError(Errno.EIO, "Failed to read initial magic: " + reason(e), e);
        }
    }

    private static SocketChannel connectUnix(BlockdevOptions.NbdServer.Unix u) throws IoError {
        try {
            return SocketChannel.open(UnixDomainSocketAddress.of(u.path()));
        } catch (IOException | RuntimeException e) {
            throw new IoError(Errno.EIO, "Failed to connect to '" + u.path() + "': " + reason(e), e);
        }
    }

    private SocketChannel connectInet(BlockdevOptions.NbdServer.Inet i) throws IoError {
        String where = i.host() + ":" + i.port();
        int port;
        try {
            port = Integer.parseInt(i.port());
            if (port < 0 || port > 65535) {
                throw new NumberFormatException();
            }
        } catch (NumberFormatException e) {
            // getaddrinfo() with a service that is neither a number nor in /etc/services
            throw new IoError(Errno.EINVAL, "address resolution failed for " + where
                    + ": Servname not supported for ai_socktype");
        }
        InetAddress[] addresses;
        try {
            addresses = InetAddress.getAllByName(i.host());
        } catch (UnknownHostException e) {
            throw new IoError(Errno.EINVAL, "address resolution failed for " + where + ": Name or service not known", e);
        }
        // inet_connect_saddr: every address in turn, the last failure reported
        List<IOException> failures = new ArrayList<>();
        for (InetAddress a : addresses) {
            SocketChannel ch = null;
            try {
                ch = SocketChannel.open();
                if (keepAlive) {
                    ch.setOption(StandardSocketOptions.SO_KEEPALIVE, true);
                }
                ch.setOption(StandardSocketOptions.TCP_NODELAY, true);
                ch.connect(new InetSocketAddress(a, port));
                return ch;
            } catch (IOException e) {
                failures.add(e);
                closeQuietly(ch);
            }
        }
        IOException last = failures.getLast();
        throw new IoError(Errno.EIO, "Failed to connect to '" + where + "': " + reason(last), last);
    }


    /**
     * The strerror() part of a JDK socket failure: the JDK's message is strerror() already
     * ("No such file or directory"), except that a refused connect may add " (details)".
     */
    static String reason(Throwable e) {
        String m = e.getMessage();
        if (m == null || m.isEmpty()) {
            return e.getClass().getSimpleName();
        }
        return e instanceof ConnectException && m.startsWith("Connection refused") ? "Connection refused" : m;
    }

    private static void closeQuietly(SocketChannel ch) {
        if (ch != null) {
            try {
                ch.close();
            } catch (IOException ignored) {
                // nothing to release
            }
        }
    }
}
