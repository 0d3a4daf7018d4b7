package jblockd.client;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * Real QEMU 7.2 as a QMP peer: {@code qemu-system-x86_64 -M none} with one raw drive
 * {@code drive0}, its QMP server on a UNIX socket. It speaks the protocol and the job commands
 * jblockd copies, which proves the client speaks real QMP.
 */
public final class QemuPeer implements QmpPeer {
    public static final String BINARY = "qemu-system-x86_64";

    private final Process process;
    private final Path socket;
    private final Path second;

    private QemuPeer(Process process, Path socket, Path second) {
        this.process = process;
        this.socket = socket;
        this.second = second;
    }

    public static boolean available() {
        return TestTools.onPath(BINARY);
    }

    /** Starts QEMU with {@code image} as raw drive {@code drive0}; returns once the socket exists. */
    public static QemuPeer start(Path dir, Path image) throws IOException, InterruptedException {
        return start(dir, image, "raw");
    }

    /**
     * Starts QEMU with {@code image} as drive {@code drive0} in {@code format}. QEMU's -qmp
     * socket serves one client at a time, so it gets two: {@link #socket()} and
     * {@link #secondSocket()}, for tests that run two clients at once.
     */
    public static QemuPeer start(Path dir, Path image, String format) throws IOException, InterruptedException {
        Path sock = dir.resolve("qemu-qmp.sock");
        Path sock2 = dir.resolve("qemu-qmp2.sock");
        Path log = dir.resolve("qemu.log");
        Process p = new ProcessBuilder(List.of(BINARY, "-M", "none", "-nodefaults", "-display", "none",
                "-qmp", "unix:" + sock + ",server=on,wait=off",
                "-qmp", "unix:" + sock2 + ",server=on,wait=off",
                "-drive", "if=none,id=drive0,file=" + image + ",format=" + format))
                .redirectErrorStream(true).redirectOutput(log.toFile()).start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (!Files.exists(sock) || !Files.exists(sock2)) {
            if (!p.isAlive() || System.nanoTime() > deadline) {
                p.destroyForcibly();
                throw new IOException("qemu did not start: " + Files.readString(log));
            }
            Thread.sleep(20);
        }
        return new QemuPeer(p, sock, sock2);
    }

    @Override
    public Path socket() {
        return socket;
    }

    /** A second QMP socket of the same QEMU. */
    @Override
    public Path secondSocket() {
        return second;
    }

    @Override
    public boolean isQemu() {
        return true;
    }

    @Override
    public void close() {
        process.destroy();
        try {
            if (!process.waitFor(5, TimeUnit.SECONDS)) {
                process.destroyForcibly().waitFor(5, TimeUnit.SECONDS);
            }
        } catch (InterruptedException e) {
            process.destroyForcibly();
            Thread.currentThread().interrupt();
        }
    }
}
