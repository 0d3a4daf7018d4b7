package jblockd.testsupport;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * The real jblockd daemon as a separate {@code java} process, for integration tests.
 * <pre>
 *   try (DaemonProcess d = DaemonProcess.start(tmp, "--drive", "id=drive0,file=" + img + ",format=raw");
 *        QmpTestClient c = d.connect()) {
 *       c.executeOk("query-block");
 *   }
 * </pre>
 * The daemon is started with {@code --qmp unix:TMP/qmp.sock} appended (unless {@link #startRaw}
 * is used) and {@link #start} returns once that socket accepts connections. The classpath comes from the
 * system properties Failsafe sets ({@code jblockd.jar}, {@code jblockd.classpath.file}), falling
 * back to {@code target/classes} + {@code target/runtime-classpath.txt}. stderr and stdout are
 * captured ({@link #stderr()}, {@link #stdout()}). {@link #close()} sends SIGTERM, waits up to
 * 10 s, then kills.
 */
public final class DaemonProcess implements AutoCloseable {
    private static final Duration START_TIMEOUT = Duration.ofSeconds(30);

    private final Process process;
    private final Path dir;
    private final Path qmpSocket;
    private final StringBuffer stderr = new StringBuffer();
    private final StringBuffer stdout = new StringBuffer();
    private final Thread errPump;
    private final Thread outPump;

    private DaemonProcess(Process process, Path dir, Path qmpSocket) {
        this.process = process;
        this.dir = dir;
        this.qmpSocket = qmpSocket;
        this.errPump = pump(process.getErrorStream(), stderr, "stderr");
        this.outPump = pump(process.getInputStream(), stdout, "stdout");
    }

    /** Starts the daemon with {@code --qmp unix:DIR/qmp.sock} plus {@code args}; waits for the socket. */
    public static DaemonProcess start(Path dir, String... args) throws IOException {
        return start(Host.LOCAL, dir, args);
    }

    /**
     * {@link #start(Path, String...)} on {@code host} (a {@link HostPair} end): the daemon's TCP
     * sockets are that host's, its QMP socket is still {@code DIR/qmp.sock} for the test JVM.
     */
    public static DaemonProcess start(Host host, Path dir, String... args) throws IOException {
        Path sock = dir.resolve("qmp.sock");
        // appended last: QMP sockets are bound in option order, so when this one accepts, every
        // socket the test asked for exists too
        List<String> all = new ArrayList<>(List.of(args));
        all.addAll(List.of("--qmp", "unix:" + sock));
        DaemonProcess d = launch(host, dir, sock, all);
        d.awaitSocket(sock);
        return d;
    }

    /**
     * Starts the daemon with exactly {@code args} (no QMP socket added) and does not wait:
     * for tests of start-up failures, --help, --version. Use {@link #waitFor} for the exit code.
     */
    public static DaemonProcess startRaw(Path dir, String... args) throws IOException {
        return launch(Host.LOCAL, dir, null, List.of(args));
    }

    /** The java command line that runs jblockd's Main with {@code args}. */
    public static List<String> command(List<String> args) {
        List<String> cmd = new ArrayList<>();
        cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        cmd.add("--enable-native-access=ALL-UNNAMED");
        // C1 only starts faster, which is what short tests want; benchmarks pass
        // -Djblockd.daemon.jvmArgs= (empty) for the full JIT
        String jvmArgs = System.getProperty("jblockd.daemon.jvmArgs", "-XX:TieredStopAtLevel=1 -Xshare:auto");
        for (String a : jvmArgs.trim().split("\\s+")) {
            if (!a.isEmpty()) {
                cmd.add(a);
            }
        }
        cmd.add("-cp");
        cmd.add(classpath());
        cmd.add("jblockd.daemon.Main");
        cmd.addAll(args);
        return cmd;
    }

    private static DaemonProcess launch(Host host, Path dir, Path sock, List<String> args) throws IOException {
        ProcessBuilder pb = new ProcessBuilder(host.command(command(args))).directory(dir.toFile());
        return new DaemonProcess(pb.start(), dir, sock);
    }

    /** jblockd's runtime classpath (jar or classes, plus dependencies). */
    public static String classpath() {
        String jar = System.getProperty("jblockd.jar");
        String cpFile = System.getProperty("jblockd.classpath.file");
        Path target = Path.of("target").toAbsolutePath();
        Path main = jar != null && Files.exists(Path.of(jar)) ? Path.of(jar) : target.resolve("classes");
        Path deps = cpFile != null && Files.exists(Path.of(cpFile)) ? Path.of(cpFile)
                : target.resolve("runtime-classpath.txt");
        try {
            String d = Files.exists(deps) ? Files.readString(deps).strip() : "";
            return d.isEmpty() ? main.toString() : main + java.io.File.pathSeparator + d;
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private static Thread pump(InputStream in, StringBuffer sink, String name) {
        return Thread.ofVirtual().name("daemon-" + name).start(() -> {
            byte[] buf = new byte[8192];
            try {
                int n;
                while ((n = in.read(buf)) > 0) {
                    sink.append(new String(buf, 0, n, StandardCharsets.UTF_8));
                }
            } catch (IOException ignored) {
                // process gone
            }
        });
    }

    private void awaitSocket(Path sock) throws IOException {
        long deadline = System.nanoTime() + START_TIMEOUT.toNanos();
        while (!Files.exists(sock) || !accepts(sock)) {
            if (!process.isAlive()) {
                waitPumps();
                throw new IOException("jblockd exited with " + process.exitValue() + " before creating "
                        + sock + "; stderr: " + stderr);
            }
            if (System.nanoTime() > deadline) {
                close();
                throw new IOException("jblockd did not create " + sock + " within " + START_TIMEOUT
                        + "; stderr: " + stderr);
            }
            try {
                Thread.sleep(20);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IOException("interrupted", e);
            }
        }
    }

    /** True when a daemon accepts on the socket (a stale socket file refuses). */
    private static boolean accepts(Path sock) {
        try (java.nio.channels.SocketChannel ch = java.nio.channels.SocketChannel.open(
                java.net.StandardProtocolFamily.UNIX)) {
            ch.connect(java.net.UnixDomainSocketAddress.of(sock));
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    /** Opens a new negotiated QMP client on the daemon's socket. */
    public QmpTestClient connect() throws IOException {
        return QmpTestClient.connectUnix(qmpSocket);
    }

    public Path qmpSocket() {
        return qmpSocket;
    }

    public Path dir() {
        return dir;
    }

    public long pid() {
        return process.pid();
    }

    public boolean isAlive() {
        return process.isAlive();
    }

    public Process process() {
        return process;
    }

    /** Everything the daemon wrote to stderr so far. */
    public String stderr() {
        return stderr.toString();
    }

    /**
     * Waits (at most {@code timeout}) until stderr contains {@code text}, and returns stderr:
     * the daemon logs after it answered, and the pump copies the pipe on its own thread.
     */
    public String awaitStderr(String text, Duration timeout) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (!stderr().contains(text) && System.nanoTime() < deadline) {
            Thread.sleep(10); // polling the pump's output, not ordering against the daemon
        }
        return stderr();
    }

    public String stdout() {
        return stdout.toString();
    }

    /** Waits for the process to exit and returns the exit code (-1 on timeout). */
    public int waitFor(Duration timeout) throws InterruptedException {
        if (!process.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
            return -1;
        }
        waitPumps();
        return process.exitValue();
    }

    /** Sends SIGTERM. */
    public void terminate() {
        process.destroy();
    }

    private void waitPumps() {
        try {
            errPump.join(2000);
            outPump.join(2000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /** SIGTERM, then SIGKILL after 10 s. */
    @Override
    public void close() {
        if (process.isAlive()) {
            process.destroy();
            try {
                if (!process.waitFor(10, TimeUnit.SECONDS)) {
                    process.destroyForcibly().waitFor(5, TimeUnit.SECONDS);
                }
            } catch (InterruptedException e) {
                process.destroyForcibly();
                Thread.currentThread().interrupt();
            }
        }
        waitPumps();
    }
}
