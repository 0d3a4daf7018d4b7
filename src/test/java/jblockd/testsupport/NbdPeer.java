package jblockd.testsupport;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * One daemon of a differential test, jblockd or qemu-storage-daemon 7.2, with its QMP client
 * and an NBD server on {@code DIR/nbd.sock}: the same steps run on both and their answers are
 * compared. On a {@link HostPair} end ({@link #jblockd(Host, Path)}, {@link #qsd(Host, Path)})
 * the NBD server listens on TCP {@code host.address():}{@link HostPair#NBD_PORT} instead, and
 * tools reach it from that host ({@code peer.host().run("qemu-io", ..., peer.nbd("e"))}) or
 * from its pair.
 */
public final class NbdPeer implements AutoCloseable {
    private final String name;
    private final QmpTestClient qmp;
    private final Path dir;
    private final AutoCloseable process;
    private final Path toolSocket;
    /** Where it runs; null: this machine, NBD on {@code DIR/nbd.sock}. */
    private final Host host;
    /** Its NBD server's TCP port on {@link #host}. */
    private final int port;

    private NbdPeer(String name, QmpTestClient qmp, Path dir, AutoCloseable process, Path toolSocket, Host host,
                    int port) {
        this.name = name;
        this.qmp = qmp;
        this.dir = dir;
        this.process = process;
        this.toolSocket = toolSocket;
        this.host = host;
        this.port = port;
    }

    /** jblockd in {@code parent/jblockd}. */
    public static NbdPeer jblockd(Path parent) throws IOException {
        Path d = Files.createDirectories(parent.resolve("jblockd"));
        DaemonProcess p = DaemonProcess.start(d, "--nbd-server", "addr.type=unix,addr.path=" + d.resolve("nbd.sock"));
        return new NbdPeer("jblockd", p.connect(), d, p, p.qmpSocket(), null, 0);
    }

    /**
     * jblockd in {@code parent/jblockd} on {@code host}, its NBD server on TCP
     * {@code host.address():NBD_PORT}; {@code args}: more daemon options, as option, value pairs.
     */
    public static NbdPeer jblockd(Host host, Path parent, String... args) throws IOException {
        return jblockd(host, HostPair.NBD_PORT, parent, args);
    }

    /** The same with the NBD server on {@code port} (two peers on one host). */
    public static NbdPeer jblockd(Host host, int port, Path parent, String... args) throws IOException {
        Path d = Files.createDirectories(parent.resolve("jblockd"));
        List<String> all = withServer(args, tcpServer(host, port, args));
        DaemonProcess p = DaemonProcess.start(host, d, all.toArray(String[]::new));
        return new NbdPeer("jblockd", p.connect(), d, p, p.qmpSocket(), host, port);
    }

    /** qemu-storage-daemon in {@code parent/qsd}, with a second monitor for tools ({@link #toolSocket}). */
    public static NbdPeer qsd(Path parent) throws IOException, InterruptedException {
        return qsd(null, 0, parent);
    }

    /**
     * qemu-storage-daemon in {@code parent/qsd} on {@code host}, its NBD server on TCP
     * {@code host.address():NBD_PORT} (null: this machine, {@code DIR/nbd.sock}); {@code args}:
     * more daemon options, as option, value pairs.
     */
    public static NbdPeer qsd(Host host, Path parent, String... args) throws IOException, InterruptedException {
        return qsd(host, HostPair.NBD_PORT, parent, args);
    }

    /** The same with the NBD server on {@code port} (two peers on one host). */
    public static NbdPeer qsd(Host host, int port, Path parent, String... args) throws IOException,
            InterruptedException {
        Path d = Files.createDirectories(parent.resolve("qsd"));
        Path second = d.resolve("qmp2.sock");
        List<String> all = withServer(args, host == null ? "addr.type=unix,addr.path=" + d.resolve("nbd.sock")
                : tcpServer(host, port, args));
        all.addAll(List.of("--chardev", "socket,id=m2,path=" + second + ",server=on,wait=off",
                "--monitor", "chardev=m2,mode=control"));
        QemuStorageDaemon p = QemuStorageDaemon.start(host == null ? Host.LOCAL : host, d, all.toArray(String[]::new));
        return new NbdPeer("qemu-storage-daemon", p.connect(), d, p, second, host, port);
    }

    /**
     * {@code args} (option, value pairs) with {@code --nbd-server SERVER} after the objects (its
     * credentials) and before the rest (--export needs the server; both daemons take options in
     * order).
     */
    private static List<String> withServer(String[] args, String server) {
        List<String> objects = new ArrayList<>();
        List<String> rest = new ArrayList<>();
        for (int i = 0; i + 1 < args.length; i += 2) {
            (args[i].equals("--object") ? objects : rest).addAll(List.of(args[i], args[i + 1]));
        }
        objects.addAll(List.of("--nbd-server", server));
        objects.addAll(rest);
        return objects;
    }

    /**
     * The --nbd-server option; TLS-only ({@code tls-creds=tls0}) when {@code args} make server
     * credentials {@code tls0} ({@code --object tls-creds-x509,id=tls0,endpoint=server,...}).
     */
    private static String tcpServer(Host host, int port, String... args) {
        boolean tls = List.of(args).stream().anyMatch(a -> a.startsWith("tls-creds-x509,") && a.contains(",id=tls0")
                && a.contains("endpoint=server"));
        return "addr.type=inet,addr.host=" + host.address() + ",addr.port=" + port + (tls ? ",tls-creds=tls0" : "");
    }

    /** Steps a differential test runs on one daemon, returning what it saw. */
    public interface Steps<T> {
        T run(NbdPeer peer) throws Exception;
    }

    /** What the same steps saw on each daemon. */
    public record Both<T>(T qemu, T jblockd) {
    }

    /**
     * Runs {@code steps} on qemu-storage-daemon 7.2, then on jblockd, each in a daemon of its
     * own under {@code parent} (QEMU first: what it saw is the reference).
     */
    public static <T> Both<T> qemuThenJblockd(Path parent, Steps<T> steps) throws Exception {
        T qemu;
        try (NbdPeer p = qsd(parent)) {
            qemu = steps.run(p);
        }
        try (NbdPeer p = jblockd(parent)) {
            return new Both<>(qemu, steps.run(p));
        }
    }

    public String name() {
        return name;
    }

    public QmpTestClient qmp() {
        return qmp;
    }

    public Path dir() {
        return dir;
    }

    /**
     * A QMP socket a tool (jblockctl) may connect to while {@link #qmp} stays connected: jblockd
     * serves many clients on one socket, a QEMU monitor only one, so QEMU gets a second monitor.
     */
    public Path toolSocket() {
        return toolSocket;
    }

    /** Where it runs ({@link Host#LOCAL} for the UNIX-socket peers). */
    public Host host() {
        return host == null ? Host.LOCAL : host;
    }

    /** The NBD URI of export {@code export} for qemu-io / qemu-img / nbdinfo. */
    public String nbd(String export) {
        return host == null ? "nbd+unix:///" + export + "?socket=" + dir.resolve("nbd.sock")
                : "nbd://" + host.address() + ":" + port + "/" + export;
    }

    /** blockdev-add's {@code server} for this peer's NBD server. */
    public Map<String, Object> nbdServer() {
        return host == null ? Map.of("type", "unix", "path", dir.resolve("nbd.sock").toString())
                : Map.of("type", "inet", "host", host.address(), "port", Integer.toString(port));
    }

    /** The daemon's process handle (to kill it as a crash would). */
    public AutoCloseable process() {
        return process;
    }

    @Override
    public void close() throws Exception {
        qmp.close();
        process.close();
    }
}
