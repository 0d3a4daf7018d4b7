package jblockd.testsupport;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * Where a test's peer process runs: this machine's own network ({@link #LOCAL}), or one end of
 * a {@link HostPair} (a network namespace). Paths are not network-namespaced, so files, UNIX
 * sockets (QMP, a guest's NBD socket) and the test JVM's view of them are the same on every
 * host; only TCP addresses differ. Stateless: a host's namespace is owned by its pair.
 */
public interface Host {
    /** This machine's network: processes run as they are, the address is the loopback one. */
    Host LOCAL = new Host() {
        @Override
        public String name() {
            return "local";
        }

        @Override
        public String address() {
            return "127.0.0.1";
        }

        @Override
        public List<String> command(List<String> argv) {
            return argv;
        }

        @Override
        public String toString() {
            return name();
        }
    };

    /** A name for messages and file names. */
    String name();

    /** The IPv4 address this host's servers listen on and its peer connects to. */
    String address();

    /** {@code argv} as a command line that runs it on this host. */
    List<String> command(List<String> argv);

    default List<String> command(String... argv) {
        return command(List.of(argv));
    }

    /** Runs a tool on this host (60 s limit, as {@link ExternalTools#run}). */
    default ExternalTools.Result run(String... argv) throws IOException, InterruptedException {
        return ExternalTools.run(command(argv).toArray(String[]::new));
    }

    /** Runs a tool on this host and fails the test on a non-zero exit. */
    default String ok(String... argv) throws IOException, InterruptedException {
        return ExternalTools.ok(command(argv).toArray(String[]::new));
    }

    /**
     * Waits until {@code process} listens on TCP {@code port} (any address), or fails when it
     * exits or {@code timeout} passes. Read from {@code /proc/PID/net/tcp{,6}}, which show the
     * process's own network namespace: the test JVM cannot connect into a namespace, but it can
     * look at its sockets.
     */
    static void awaitListening(Process process, int port, Duration timeout) throws IOException, InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        String hexPort = String.format(Locale.ROOT, ":%04X", port);
        while (true) {
            for (String table : new String[] {"tcp", "tcp6"}) {
                Path p = Path.of("/proc", Long.toString(process.pid()), "net", table);
                List<String> lines = new ArrayList<>();
                try {
                    lines = Files.readAllLines(p);
                } catch (IOException e) {
                    // the process is gone (checked below) or has no IPv6
                }
                for (String line : lines) {
                    // "  sl  local_address rem_address   st ...": 0A is TCP_LISTEN
                    String[] f = line.trim().split("\\s+");
                    if (f.length > 3 && f[1].endsWith(hexPort) && f[3].equals("0A")) {
                        return;
                    }
                }
            }
            if (!process.isAlive()) {
                throw new IOException("process " + process.pid() + " exited (" + process.exitValue()
                        + ") before listening on port " + port);
            }
            if (System.nanoTime() > deadline) {
                throw new IOException("process " + process.pid() + " did not listen on port " + port
                        + " within " + timeout);
            }
            Thread.sleep(10); // polling the peer's start-up, not synchronising with it
        }
    }
}
