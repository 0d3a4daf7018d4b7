package jblockd.it;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.CopyOnWriteArrayList;

/**
 * A TCP relay between an NBD client and the server that records what the client sends: its
 * handshake flags, the options it negotiates (NBD doc/proto.md "Option types") and, in
 * transmission, how many requests of each type with which flags and the largest length. The
 * bytes pass unchanged. It lets a test see what a client we do not control (the kernel's)
 * actually asked for. Anything it cannot parse is relayed raw and marked {@code unparsed}.
 */
final class NbdTap implements AutoCloseable {
    private static final long IHAVEOPT = 0x49484156454F5054L;
    private static final int REQUEST_MAGIC = 0x25609513;
    private static final String[] OPTIONS = {"?", "EXPORT_NAME", "ABORT", "LIST", "PEEK_EXPORT", "STARTTLS",
        "INFO", "GO", "STRUCTURED_REPLY", "LIST_META_CONTEXT", "SET_META_CONTEXT", "EXTENDED_HEADERS"};
    private static final String[] COMMANDS = {"READ", "WRITE", "DISC", "FLUSH", "TRIM", "CACHE", "WRITE_ZEROES",
        "BLOCK_STATUS", "RESIZE"};
    private static final String[] REQUEST_FLAGS = {"FUA", "NO_HOLE", "DF", "REQ_ONE", "FAST_ZERO", "PAYLOAD_LEN"};

    /** What one client connection sent. Filled by the relay thread; read after it ended. */
    static final class Conn {
        volatile int clientFlags = -1;
        final List<String> options = new CopyOnWriteArrayList<>();
        final Map<String, Integer> commands = new TreeMap<>();
        final Map<String, Integer> flags = new TreeMap<>();
        final Map<String, Long> maxLength = new TreeMap<>();
        volatile boolean unparsed;
        volatile boolean ended;

        synchronized void request(int type, int reqFlags, long length) {
            String t = type < COMMANDS.length ? COMMANDS[type] : "TYPE_" + type;
            commands.merge(t, 1, Integer::sum);
            maxLength.merge(t, length, Math::max);
            for (int b = 0; b < REQUEST_FLAGS.length; b++) {
                if ((reqFlags & (1 << b)) != 0) {
                    flags.merge(t + "+" + REQUEST_FLAGS[b], 1, Integer::sum);
                }
            }
        }

        synchronized int count(String command) {
            return commands.getOrDefault(command, 0);
        }

        @Override
        public synchronized String toString() {
            return "clientFlags=0x" + Integer.toHexString(clientFlags) + " options=" + options + " requests="
                    + commands + " flags=" + flags + " maxLength=" + maxLength + (unparsed ? " UNPARSED" : "");
        }
    }

    private final ServerSocket listener;
    private final int upstreamPort;
    private final List<Conn> conns = new CopyOnWriteArrayList<>();
    private final List<Socket> sockets = new CopyOnWriteArrayList<>();
    private final Thread acceptor;

    NbdTap(int upstreamPort) throws IOException {
        this.upstreamPort = upstreamPort;
        this.listener = new ServerSocket();
        listener.bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
        this.acceptor = Thread.ofVirtual().name("nbd-tap-accept").start(this::acceptLoop);
    }

    int port() {
        return listener.getLocalPort();
    }

    /**
     * The connections so far, after waiting up to {@code waitMillis} for each to end (a client's
     * last request, DISC, gets no reply, so the client may be gone before the relay parsed it).
     */
    List<Conn> connections(long waitMillis) throws InterruptedException {
        long deadline = System.nanoTime() + waitMillis * 1_000_000L;
        while (conns.stream().anyMatch(c -> !c.ended) && System.nanoTime() < deadline) {
            Thread.sleep(20);
        }
        return new ArrayList<>(conns);
    }

    private void acceptLoop() {
        try {
            while (true) {
                Socket client = listener.accept();
                Socket server = new Socket(InetAddress.getLoopbackAddress(), upstreamPort);
                client.setTcpNoDelay(true);
                server.setTcpNoDelay(true);
                sockets.add(client);
                sockets.add(server);
                Conn c = new Conn();
                conns.add(c);
                Thread.ofVirtual().name("nbd-tap-s2c").start(() -> relayRaw(server, client));
                Thread.ofVirtual().name("nbd-tap-c2s").start(() -> relayParsed(client, server, c));
            }
        } catch (IOException e) {
            // listener closed
        }
    }

    private static void relayRaw(Socket from, Socket to) {
        try {
            from.getInputStream().transferTo(to.getOutputStream());
        } catch (IOException e) {
            // either side gone
        } finally {
            shutdownOutput(to);
        }
    }

    private static void relayParsed(Socket from, Socket to, Conn c) {
        try {
            DataInputStream in = new DataInputStream(new BufferedInputStream(from.getInputStream(), 1 << 16));
            OutputStream out = new BufferedOutputStream(to.getOutputStream(), 1 << 16);
            try {
                if (parse(in, out, c)) {
                    out.flush();
                    in.transferTo(out);
                }
            } catch (EOFException e) {
                // client closed
            } finally {
                out.flush();
            }
        } catch (IOException e) {
            // either side gone
        } finally {
            c.ended = true;
            shutdownOutput(to);
        }
    }

    /** Parses and forwards; true when the rest must be relayed raw. */
    private static boolean parse(DataInputStream in, OutputStream out, Conn c) throws IOException {
        int flags = in.readInt();
        c.clientFlags = flags;
        writeInt(out, flags);
        out.flush();
        while (true) {
            long magic = in.readLong();
            writeLong(out, magic);
            if (magic != IHAVEOPT) {
                c.unparsed = true;
                return true;
            }
            int opt = in.readInt();
            int len = in.readInt();
            writeInt(out, opt);
            writeInt(out, len);
            if (len < 0 || len > 1 << 16) {
                c.unparsed = true;
                return true;
            }
            byte[] data = in.readNBytes(len);
            out.write(data);
            out.flush();
            c.options.add(describeOption(opt, data));
            // EXPORT_NAME always ends the handshake; GO does when the server accepts it, which
            // it does for the exports this tap is used with
            if (opt == 1 || opt == 7) {
                break;
            }
        }
        while (true) {
            int magic = in.readInt();
            writeInt(out, magic);
            if (magic != REQUEST_MAGIC) {
                c.unparsed = true;
                return true;
            }
            int reqFlags = in.readUnsignedShort();
            int type = in.readUnsignedShort();
            long cookie = in.readLong();
            long offset = in.readLong();
            long length = Integer.toUnsignedLong(in.readInt());
            out.write(new byte[] {(byte) (reqFlags >> 8), (byte) reqFlags, (byte) (type >> 8), (byte) type});
            writeLong(out, cookie);
            writeLong(out, offset);
            writeInt(out, (int) length);
            c.request(type, reqFlags, length);
            if (type == 1) {
                copy(in, out, length);
            }
            out.flush();
            if (type == 2) {
                return true;
            }
        }
    }

    private static String describeOption(int opt, byte[] data) {
        String name = opt >= 0 && opt < OPTIONS.length ? OPTIONS[opt] : "OPT_" + opt;
        if (opt == 1) {
            return name + "('" + new String(data, StandardCharsets.UTF_8) + "')";
        }
        if ((opt == 6 || opt == 7) && data.length >= 6) {
            java.nio.ByteBuffer b = java.nio.ByteBuffer.wrap(data);
            int nameLen = b.getInt();
            if (nameLen >= 0 && nameLen <= b.remaining() - 2) {
                String export = new String(data, 4, nameLen, StandardCharsets.UTF_8);
                b.position(4 + nameLen);
                int n = Short.toUnsignedInt(b.getShort());
                List<Integer> infos = new ArrayList<>();
                for (int i = 0; i < n && b.remaining() >= 2; i++) {
                    infos.add(Short.toUnsignedInt(b.getShort()));
                }
                return name + "('" + export + "', info requests " + infos + ")";
            }
        }
        return name;
    }

    private static void copy(InputStream in, OutputStream out, long length) throws IOException {
        byte[] buf = new byte[1 << 16];
        long left = length;
        while (left > 0) {
            int n = in.read(buf, 0, (int) Math.min(buf.length, left));
            if (n < 0) {
                throw new EOFException();
            }
            out.write(buf, 0, n);
            left -= n;
        }
    }

    private static void writeInt(OutputStream out, int v) throws IOException {
        out.write(new byte[] {(byte) (v >> 24), (byte) (v >> 16), (byte) (v >> 8), (byte) v});
    }

    private static void writeLong(OutputStream out, long v) throws IOException {
        writeInt(out, (int) (v >> 32));
        writeInt(out, (int) v);
    }

    private static void shutdownOutput(Socket s) {
        try {
            s.shutdownOutput();
        } catch (IOException e) {
            // closed already
        }
    }

    @Override
    public void close() {
        try {
            listener.close();
        } catch (IOException ignored) {
            // fine
        }
        for (Socket s : sockets) {
            try {
                s.close();
            } catch (IOException ignored) {
                // fine
            }
        }
        try {
            acceptor.join(2000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
