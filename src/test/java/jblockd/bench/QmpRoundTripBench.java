package jblockd.bench;

import java.nio.file.Path;
import jblockd.client.QmpClient;

/**
 * QMP round trips through {@code jblockd.client}: {@code query-status} and
 * {@code query-block-jobs}, N times in a row on one connection. Run it against jblockd and
 * QEMU 7.2 on the same machine and compare:
 * {@code java -cp ... jblockd.bench.QmpRoundTripBench SOCKET [N]}.
 */
public final class QmpRoundTripBench {
    private QmpRoundTripBench() {
    }

    public static void main(String[] args) throws Exception {
        Path sock = Path.of(args[0]);
        int n = args.length > 1 ? Integer.parseInt(args[1]) : 5000;
        try (QmpClient qmp = QmpClient.connectUnix(sock)) {
            for (int i = 0; i < n / 5; i++) { // warm-up
                qmp.queryStatus();
            }
            for (String cmd : new String[] {"query-status", "query-block-jobs", "query-block"}) {
                long t0 = System.nanoTime();
                for (int i = 0; i < n; i++) {
                    qmp.execute(cmd, null);
                }
                double us = (System.nanoTime() - t0) / 1e3 / n;
                System.out.printf("%-18s %8.1f us/round trip  %8.0f/s%n", cmd, us, 1e6 / us);
            }
        }
    }
}
