package jblockd.testsupport;

import java.io.IOException;
import java.net.ConnectException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * qemu-storage-daemon 7.2 as a differential peer: a QMP monitor on {@code DIR/qmp.sock} plus the
 * given arguments, its output in {@code DIR/qsd.log}. {@link #connect} waits until the monitor
 * listens (the socket file exists a moment before it does).
 */
public final class QemuStorageDaemon implements AutoCloseable {
    private final Process process;
    private final Path socket;

    private QemuStorageDaemon(Process process, Path socket) {
        this.process = process;
        this.socket = socket;
    }

    public static QemuStorageDaemon start(Path dir, String... args) throws IOException {
        return start(Host.LOCAL, dir, args);
    }

    /** On {@code host} (a {@link HostPair} end): its TCP sockets are that host's; QMP stays on DIR/qmp.sock. */
    public static QemuStorageDaemon start(Host host, Path dir, String... args) throws IOException {
        Files.createDirectories(dir);
        Path sock = dir.resolve("qmp.sock");
        List<String> cmd = new ArrayList<>(List.of("qemu-storage-daemon", "--chardev",
                "socket,id=m,path=" + sock + ",server=on,wait=off", "--monitor", "chardev=m,mode=control"));
        cmd.addAll(List.of(args));
        Process p = new ProcessBuilder(host.command(cmd)).redirectErrorStream(true)
                .redirectOutput(dir.resolve("qsd.log").toFile()).start();
        return new QemuStorageDaemon(p, sock);
    }

    /** A QMP client, once the monitor accepts (polling QEMU's start-up, 20 s at most). */
    public QmpTestClient connect() throws IOException, InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (true) {
            if (!process.isAlive()) {
                throw new IOException("qemu-storage-daemon exited (" + process.exitValue() + "): " + log().strip());
            }
            if (Files.exists(socket)) {
                try {
                    return QmpTestClient.connectUnix(socket);
                } catch (ConnectException e) {
                    if (System.nanoTime() > deadline) {
                        throw e;
                    }
                }
            } else if (System.nanoTime() > deadline) {
                throw new IOException("qemu-storage-daemon did not create " + socket + " within 20 s");
            }
            Thread.sleep(10); // waiting for QEMU to listen, not synchronising with it
        }
    }

    /** Everything it wrote so far (stdout and stderr: error reports, traces). */
    public String log() throws IOException {
        Path log = socket.resolveSibling("qsd.log");
        return Files.exists(log) ? Files.readString(log) : "";
    }

    @Override
    public void close() throws InterruptedException {
        process.destroy();
        process.waitFor(10, TimeUnit.SECONDS);
    }
}
