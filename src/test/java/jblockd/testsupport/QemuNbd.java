package jblockd.testsupport;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * A qemu-nbd 7.2 serving one image as export {@code name} on a UNIX socket, persistent
 * ({@code -t}) and shared by several clients ({@code -e 8}): the remote end of nbd-client tests,
 * which can be killed (SIGKILL) and started again on the same socket.
 */
public final class QemuNbd implements AutoCloseable {
    private final Process process;
    private final Path socket;

    private QemuNbd(Process process, Path socket) {
        this.process = process;
        this.socket = socket;
    }

    /** Starts it ({@code extra}: more qemu-nbd options) and waits (bounded) until the socket exists. */
    public static QemuNbd start(Path socket, Path image, String format, String name, String... extra)
            throws IOException, InterruptedException {
        Files.deleteIfExists(socket);
        List<String> cmd = new ArrayList<>(List.of("qemu-nbd", "-f", format, "-t", "-e", "8", "-x", name, "-k",
                socket.toString(), "--cache=none"));
        cmd.addAll(List.of(extra));
        cmd.add(image.toString());
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true)
                .redirectOutput(socket.resolveSibling(socket.getFileName() + ".log").toFile()).start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (!Files.exists(socket)) {
            if (!p.isAlive() || System.nanoTime() > deadline) {
                p.destroyForcibly();
                throw new IOException("qemu-nbd did not start");
            }
            Thread.sleep(10); // waiting for qemu-nbd to listen, not synchronising with it
        }
        return new QemuNbd(p, socket);
    }

    /**
     * Serving on TCP {@code 127.0.0.1:port} instead (the UNIX socket path is then only where
     * its log goes); waits until the port accepts.
     */
    public static QemuNbd startTcp(Path logDir, int port, Path image, String format, String name) throws IOException,
            InterruptedException {
        return startTcp(Host.LOCAL, logDir, port, image, format, name);
    }

    /**
     * Serving on TCP {@code host.address():port} of {@code host} (a {@link HostPair} end, or
     * {@link Host#LOCAL}); {@code extra}: more qemu-nbd options. Its log is
     * {@code logDir/qemu-nbd-PORT.log}; returns once it listens.
     */
    public static QemuNbd startTcp(Host host, Path logDir, int port, Path image, String format, String name,
                                   String... extra) throws IOException, InterruptedException {
        List<String> cmd = new ArrayList<>(List.of("qemu-nbd", "-f", format, "-t", "-e", "8", "-x", name, "-b",
                host.address(), "-p", Integer.toString(port), "--cache=none"));
        cmd.addAll(List.of(extra));
        cmd.add(image.toString());
        Process p = new ProcessBuilder(host.command(cmd)).redirectErrorStream(true)
                .redirectOutput(logDir.resolve("qemu-nbd-" + port + ".log").toFile()).start();
        try {
            Host.awaitListening(p, port, java.time.Duration.ofSeconds(20));
        } catch (IOException e) {
            p.destroyForcibly();
            throw new IOException("qemu-nbd did not start on " + host.address() + ":" + port + ": " + e.getMessage(), e);
        }
        return new QemuNbd(p, null);
    }

    /** A TCP port nothing listens on now (for {@link #startTcp}). */
    public static int freePort() throws IOException {
        try (java.net.ServerSocket s = new java.net.ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }

    public Path socket() {
        return socket;
    }

    /** nbd+unix URI of the export. */
    public String uri(String name) {
        return "nbd+unix:///" + name + "?socket=" + socket;
    }

    /** SIGKILL, as a crashed server: its clients see the connection drop. */
    public void kill() throws InterruptedException {
        process.destroyForcibly();
        process.waitFor(10, TimeUnit.SECONDS);
    }

    @Override
    public void close() throws InterruptedException {
        process.destroy();
        if (!process.waitFor(10, TimeUnit.SECONDS)) {
            kill();
        }
    }
}
