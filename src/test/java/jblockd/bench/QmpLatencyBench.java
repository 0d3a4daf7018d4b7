package jblockd.bench;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/**
 * QMP round-trip latency, jblockd vs QEMU 7.2 in the same run: N sequential calls of one
 * command over a UNIX socket after a warm-up, p50/p99/mean. Usage (bench/qmp-bench.sh):
 * {@code QmpLatencyBench [N] [command]} (defaults 5000, query-status if jblockd has it, else
 * query-version). QEMU: {@code qemu-system-x86_64 -M none -nodefaults -display none}.
 */
public final class QmpLatencyBench {
    private QmpLatencyBench() {
    }

    record Result(String who, String command, int n, double p50us, double p99us, double meanus) {
        @Override
        public String toString() {
            return String.format("%-8s %-14s n=%d  p50=%.1f us  p99=%.1f us  mean=%.1f us", who, command, n, p50us,
                    p99us, meanus);
        }
    }

    static Result measure(String who, QmpTestClient c, String command, int n) throws IOException {
        for (int i = 0; i < Math.min(2000, n); i++) {
            c.executeOk(command); // warm-up (JIT, caches)
        }
        long[] t = new long[n];
        long sum = 0;
        for (int i = 0; i < n; i++) {
            long t0 = System.nanoTime();
            c.executeOk(command);
            t[i] = System.nanoTime() - t0;
            sum += t[i];
        }
        Arrays.sort(t);
        return new Result(who, command, n, t[n / 2] / 1e3, t[(int) (n * 0.99)] / 1e3, sum / 1e3 / n);
    }

    public static void main(String[] args) throws Exception {
        int n = args.length > 0 ? Integer.parseInt(args[0]) : 5000;
        Path dir = Files.createTempDirectory("qmp-bench");
        List<Result> results = new ArrayList<>();
        String command;
        try (DaemonProcess d = DaemonProcess.start(dir); QmpTestClient c = d.connect()) {
            boolean hasStatus = false;
            for (var e : c.executeOk("query-commands")) {
                hasStatus |= e.get("name").asText().equals("query-status");
            }
            command = args.length > 1 ? args[1] : hasStatus ? "query-status" : "query-version";
            results.add(measure("jblockd", c, command, n));
        }
        Path qsock = dir.resolve("qemu.sock");
        Process q = new ProcessBuilder("qemu-system-x86_64", "-M", "none", "-nodefaults", "-display", "none",
                "-qmp", "unix:" + qsock + ",server=on,wait=off").redirectErrorStream(true).start();
        try {
            for (int i = 0; i < 200 && !Files.exists(qsock); i++) {
                Thread.sleep(25);
            }
            try (QmpTestClient c = QmpTestClient.connectUnix(qsock)) {
                results.add(measure("qemu", c, command, n));
            }
        } catch (IOException e) {
            System.out.println("qemu-system-x86_64 not usable: " + e.getMessage());
        } finally {
            q.destroy();
            q.waitFor(5, TimeUnit.SECONDS);
        }
        results.forEach(System.out::println);
        if (results.size() == 2) {
            System.out.printf("ratio jblockd/qemu: p50 %.2f  p99 %.2f  mean %.2f%n",
                    results.get(0).p50us() / results.get(1).p50us(), results.get(0).p99us() / results.get(1).p99us(),
                    results.get(0).meanus() / results.get(1).meanus());
        }
    }
}
