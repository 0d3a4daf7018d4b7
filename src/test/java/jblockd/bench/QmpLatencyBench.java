package jblockd.bench;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;

import jblockd.testsupport.DaemonProcess;

/**
 * QMP round-trip latency, jblockd vs QEMU 7.2 in the same run: N sequential calls of one
 * command over a UNIX socket after a warm-up, in interleaved blocks of 250 (so background load
 * hits both peers alike), p50/p99/mean; then sporadic calls, one every 10 ms alternating between
 * the peers ({@code -Djblockd.bench.sporadic=500} of each, 0 to skip), each finding its server
 * idle as a management tool's commands do. Usage (bench/qmp-bench.sh):
 * {@code QmpLatencyBench [N] [command]} (defaults 5000, query-status if jblockd has it, else
 * query-version). QEMU: {@code qemu-system-x86_64 -M none -nodefaults -display none}.
 */
public final class QmpLatencyBench {
    private QmpLatencyBench() {
    }

    /** Pause before each sporadic call (the server goes idle, as between a tool's commands). */
    static final int SPORADIC_GAP_MS = 10;

    record Result(String who, String command, int n, double p50us, double p90us, double p99us, double p999us,
                  double maxus, double meanus) {
        @Override
        public String toString() {
            return String.format("%-8s %-14s n=%d  p50=%.1f us  p90=%.1f us  p99=%.1f us  p99.9=%.1f us  max=%.1f us"
                    + "  mean=%.1f us", who, command, n, p50us, p90us, p99us, p999us, maxus, meanus);
        }
    }

    /**
     * A minimal synchronous QMP client: the calling (platform) thread writes a request and reads
     * the socket until the reply line, so the client adds no thread hand-offs of its own and the
     * figures are the servers' (the same client measures both peers).
     */
    static final class LeanClient implements AutoCloseable {
        private final SocketChannel ch;
        private final ByteBuffer in = ByteBuffer.allocate(1 << 20);

        LeanClient(Path socket) throws IOException {
            ch = SocketChannel.open(StandardProtocolFamily.UNIX);
            ch.connect(UnixDomainSocketAddress.of(socket));
            in.flip();
            readLine(); // greeting
            call("qmp_capabilities");
        }

        /** Sends one command and returns its reply line; fails on an error reply. */
        String call(String command) throws IOException {
            ByteBuffer out = ByteBuffer.wrap(("{\"execute\":\"" + command + "\"}\n").getBytes(StandardCharsets.UTF_8));
            while (out.hasRemaining()) {
                ch.write(out);
            }
            while (true) {
                String line = readLine();
                if (line.startsWith("{\"return\"")) {
                    return line;
                }
                if (line.startsWith("{\"error\"")) {
                    throw new IOException(command + ": " + line);
                }
                // an event: skip
            }
        }

        private String readLine() throws IOException {
            while (true) {
                for (int i = in.position(); i < in.limit(); i++) {
                    if (in.get(i) == '\n') {
                        byte[] b = new byte[i - in.position()];
                        in.get(b);
                        in.get(); // the newline
                        return new String(b, StandardCharsets.UTF_8).trim();
                    }
                }
                in.compact();
                if (ch.read(in) < 0) {
                    throw new IOException("EOF");
                }
                in.flip();
            }
        }

        @Override
        public void close() throws IOException {
            ch.close();
        }
    }

    static void warm(LeanClient c, String command, int n) throws IOException {
        for (int i = 0; i < n; i++) {
            c.call(command); // JIT, caches
        }
    }

    /** Times {@code n} calls into {@code into} starting at {@code from}. */
    static void timeCalls(LeanClient c, String command, long[] into, int from, int n) throws IOException {
        for (int i = from; i < from + n; i++) {
            long t0 = System.nanoTime();
            c.call(command);
            into[i] = System.nanoTime() - t0;
        }
    }

    static Result summarize(String who, String command, long[] t) {
        long[] s = t.clone();
        Arrays.sort(s);
        long sum = 0;
        for (long x : s) {
            sum += x;
        }
        int n = s.length;
        return new Result(who, command, n, s[n / 2] / 1e3, s[(int) (n * 0.90)] / 1e3, s[(int) (n * 0.99)] / 1e3,
                s[(int) (n * 0.999)] / 1e3, s[n - 1] / 1e3, sum / 1e3 / n);
    }

    public static void main(String[] args) throws Exception {
        int n = args.length > 0 ? Integer.parseInt(args[0]) : 5000;
        Path dir = Files.createTempDirectory("qmp-bench");
        List<Result> results = new ArrayList<>();
        String command;
        Path qsock = dir.resolve("qemu.sock");
        Process q = new ProcessBuilder("qemu-system-x86_64", "-M", "none", "-nodefaults", "-display", "none",
                "-qmp", "unix:" + qsock + ",server=on,wait=off").redirectErrorStream(true).start();
        try (DaemonProcess d = DaemonProcess.start(dir); LeanClient c = new LeanClient(d.qmpSocket())) {
            command = args.length > 1 ? args[1] : c.call("query-commands").contains("\"query-status\"")
                    ? "query-status" : "query-version";
            for (int i = 0; i < 200 && !Files.exists(qsock); i++) {
                Thread.sleep(25);
            }
            LeanClient qc = null;
            try {
                qc = new LeanClient(qsock);
            } catch (IOException e) {
                System.out.println("qemu-system-x86_64 not usable: " + e.getMessage());
            }
            // Interleave blocks of calls so both peers see the same background load.
            int block = 250;
            long[] tj = new long[n];
            long[] tq = new long[n];
            warm(c, command, Math.min(3000, n));
            if (qc != null) {
                warm(qc, command, Math.min(3000, n));
            }
            for (int from = 0; from < n; from += block) {
                int len = Math.min(block, n - from);
                timeCalls(c, command, tj, from, len);
                if (qc != null) {
                    timeCalls(qc, command, tq, from, len);
                }
            }
            results.add(summarize("jblockd", command, tj));
            if (qc != null) {
                results.add(summarize("qemu", command, tq));
            }
            // Sporadic calls, as a management tool makes them: one call every SPORADIC_GAP_MS,
            // alternating between the peers, so each call finds its server idle.
            int sporadic = Integer.getInteger("jblockd.bench.sporadic", 500);
            if (sporadic > 0) {
                long[] sj = new long[sporadic];
                long[] sq = new long[sporadic];
                for (int i = 0; i < sporadic; i++) {
                    Thread.sleep(SPORADIC_GAP_MS);
                    timeCalls(c, command, sj, i, 1);
                    if (qc != null) {
                        Thread.sleep(SPORADIC_GAP_MS);
                        timeCalls(qc, command, sq, i, 1);
                    }
                }
                results.add(summarize("jblockd", command + "/idle", sj));
                if (qc != null) {
                    results.add(summarize("qemu", command + "/idle", sq));
                }
            }
            if (qc != null) {
                qc.close();
            }
        } finally {
            q.destroy();
            q.waitFor(5, TimeUnit.SECONDS);
        }
        results.forEach(System.out::println);
        for (int i = 0; i + 1 < results.size(); i += 2) {
            Result rj = results.get(i);
            Result rq = results.get(i + 1);
            System.out.printf("ratio jblockd/qemu %-20s p50 %.2f  p99 %.2f  mean %.2f%n", rj.command(),
                    rj.p50us() / rq.p50us(), rj.p99us() / rq.p99us(), rj.meanus() / rq.meanus());
        }
    }
}
