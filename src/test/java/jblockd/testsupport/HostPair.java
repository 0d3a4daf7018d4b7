package jblockd.testsupport;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ThreadLocalRandom;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Two "hosts" on one machine: two network namespaces joined by a veth pair, the only link
 * either has (besides its own loopback, which is up). The pair's /30 from 10.0.0.0/8 exists
 * only inside the two namespaces (no route anywhere else), and is picked per pair from the
 * test JVM's pid and a random number; the namespace name made of the same two is claimed by
 * {@code ip netns add} (which fails on an existing name), so pairs made at the same time never
 * share names or addresses.
 * <pre>
 *   try (HostPair hosts = HostPair.create()) {
 *       DaemonProcess a = DaemonProcess.start(hosts.a(), dirA);      // jblockd on host A
 *       QemuNbd b = QemuNbd.startTcp(hosts.b(), dirB, HostPair.NBD_PORT, img, "raw", "e");
 *       // A reaches B at hosts.b().address():NBD_PORT; QMP stays on UNIX sockets
 *       hosts.partition(); ...; hosts.heal();
 *   }
 * </pre>
 * Every process runs as {@code ip netns exec NS ...} (which execs it: the {@link Process} is
 * the peer itself, so signals reach it). {@link #create} skips the test (an assumption) where
 * namespaces cannot be made: not root, no {@code ip}, or the kernel refuses. {@link #close}
 * deletes both namespaces, which destroys the veth pair; namespaces left by a test JVM that
 * was killed are removed by the next {@link #create}, after killing what still runs in them.
 */
public final class HostPair implements AutoCloseable {
    /** The NBD port servers use: each namespace has its own port space, so it never collides. */
    public static final int NBD_PORT = 10809;

    private static final String PREFIX = "jbh";
    /** Our namespace names: PREFIX, the test JVM's pid, "n", a number, the end ("a" or "b"). */
    private static final Pattern OURS = Pattern.compile(PREFIX + "(\\d+)n(\\d+)([ab])");
    private static final String DEV_A = "veth-a";
    private static final String DEV_B = "veth-b";

    private final Namespace a;
    private final Namespace b;

    private HostPair(Namespace a, Namespace b) {
        this.a = a;
        this.b = b;
    }

    /** One end: a namespace, its veth end and its address. */
    private record Namespace(String ns, String dev, String address) implements Host {
        @Override
        public String name() {
            return ns;
        }

        @Override
        public List<String> command(List<String> argv) {
            List<String> cmd = new ArrayList<>(List.of("ip", "netns", "exec", ns));
            cmd.addAll(argv);
            return cmd;
        }

        @Override
        public String toString() {
            return ns + "(" + address + ")";
        }
    }

    /**
     * Makes the pair, or skips the test with the reason when this machine cannot (not root, no
     * {@code ip}, namespaces refused).
     */
    public static HostPair create() throws IOException, InterruptedException {
        assumeTrue(ExternalTools.present("ip"), "network namespaces: the ip command (iproute2) is not installed");
        assumeTrue(isRoot(), "network namespaces need root (CAP_SYS_ADMIN, CAP_NET_ADMIN); running as uid "
                + uid());
        removeStale();
        long pid = ProcessHandle.current().pid();
        Namespace a;
        Namespace b;
        for (int attempt = 0; ; attempt++) {
            int n = ThreadLocalRandom.current().nextInt(1 << 16);
            String base = PREFIX + pid + "n" + n;
            // a /30 of 10.0.0.0/8 per pair (2^22 of them)
            long index = (pid * 4099 + n) % (1 << 22);
            long net = (10L << 24) | (index << 2);
            a = new Namespace(base + "a", DEV_A, ipv4(net + 1));
            b = new Namespace(base + "b", DEV_B, ipv4(net + 2));
            ExternalTools.Result made = ExternalTools.run("ip", "netns", "add", a.ns());
            if (made.exit() == 0) {
                break;
            }
            // taken by a pair made at the same moment: draw again; anything else is the machine's refusal
            assumeTrue(made.out().contains("File exists") && attempt < 10,
                    "network namespaces cannot be made here: " + made.out().strip());
        }
        HostPair pair = new HostPair(a, b);
        try {
            ExternalTools.ok("ip", "netns", "add", b.ns());
            // both ends created in their namespaces at once: no name ever appears in ours
            ExternalTools.ok("ip", "link", "add", a.dev(), "netns", a.ns(), "type", "veth", "peer", "name", b.dev(),
                    "netns", b.ns());
            for (Namespace e : List.of(a, b)) {
                ExternalTools.ok("ip", "-n", e.ns(), "link", "set", "lo", "up");
                ExternalTools.ok("ip", "-n", e.ns(), "addr", "add", e.address() + "/30", "dev", e.dev());
            }
            pair.heal();
            return pair;
        } catch (IOException | InterruptedException | RuntimeException | AssertionError e) {
            pair.close();
            throw e;
        }
    }

    /** Host A (the first namespace). */
    public Host a() {
        return a;
    }

    /** Host B (the second namespace). */
    public Host b() {
        return b;
    }

    /**
     * Takes the link down on both ends: packets between the hosts are lost (TCP connections stay
     * open and retransmit, as across a cut cable), nothing else changes.
     */
    public void partition() throws IOException, InterruptedException {
        for (Namespace e : List.of(a, b)) {
            ExternalTools.ok("ip", "-n", e.ns(), "link", "set", e.dev(), "down");
        }
    }

    /** Brings the link up on both ends and waits (bounded) until both report carrier. */
    public void heal() throws IOException, InterruptedException {
        for (Namespace e : List.of(a, b)) {
            ExternalTools.ok("ip", "-n", e.ns(), "link", "set", e.dev(), "up");
        }
        long deadline = System.nanoTime() + Duration.ofSeconds(10).toNanos();
        for (Namespace e : List.of(a, b)) {
            while (!ExternalTools.ok("ip", "-n", e.ns(), "link", "show", "dev", e.dev()).contains("LOWER_UP")) {
                if (System.nanoTime() > deadline) {
                    throw new IOException(e.dev() + " in " + e.ns() + " has no carrier after link up");
                }
                Thread.sleep(10); // polling the kernel's link state
            }
        }
    }

    /** Deletes both namespaces (and so the veth pair). Processes still in them keep running. */
    @Override
    public void close() throws IOException, InterruptedException {
        for (Namespace e : List.of(a, b)) {
            ExternalTools.run("ip", "netns", "del", e.ns());
        }
    }

    @Override
    public String toString() {
        return "HostPair[" + a + " <-> " + b + "]";
    }

    /**
     * Namespaces of ours whose test JVM is gone: what still runs in them is killed (a daemon a
     * killed run left behind), then they are deleted.
     */
    private static void removeStale() throws IOException, InterruptedException {
        ExternalTools.Result list = ExternalTools.run("ip", "netns", "list");
        for (String line : list.out().lines().toList()) {
            String ns = line.split("\\s+")[0];
            Matcher m = OURS.matcher(ns);
            if (!m.matches() || ProcessHandle.of(Long.parseLong(m.group(1))).isPresent()) {
                continue;
            }
            for (String pid : ExternalTools.run("ip", "netns", "pids", ns).out().lines().toList()) {
                ProcessHandle.of(Long.parseLong(pid.strip())).ifPresent(ProcessHandle::destroyForcibly);
            }
            ExternalTools.run("ip", "netns", "del", ns);
        }
    }

    private static String ipv4(long v) {
        return ((v >> 24) & 255) + "." + ((v >> 16) & 255) + "." + ((v >> 8) & 255) + "." + (v & 255);
    }

    private static boolean isRoot() {
        return "0".equals(uid());
    }

    /** The effective uid, from /proc (the JDK has no call for it). */
    private static String uid() {
        try {
            for (String l : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (l.startsWith("Uid:")) {
                    return l.split("\\s+")[2];
                }
            }
        } catch (IOException e) {
            // not Linux: no namespaces either
        }
        return "unknown";
    }
}
