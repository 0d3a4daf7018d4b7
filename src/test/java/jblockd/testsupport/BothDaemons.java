package jblockd.testsupport;

import java.nio.file.Files;
import java.nio.file.Path;

/**
 * A differential exchange run on jblockd and then, when installed, on qemu-storage-daemon 7.2:
 * each daemon gets its own directory under {@code dir} ({@code j}, {@code q}) and an NBD server
 * on {@code DIR/nbd.sock}; the exchange asserts what both must do.
 */
public final class BothDaemons {
    /** One exchange with one daemon, over its QMP client, in its own directory. */
    public interface Exchange {
        void run(QmpTestClient c, Path d) throws Exception;
    }

    private BothDaemons() {
    }

    public static void run(Path dir, Exchange exchange) throws Exception {
        Path j = Files.createDirectories(dir.resolve("j"));
        try (DaemonProcess d = DaemonProcess.start(j, "--nbd-server", "addr.type=unix,addr.path=" + j.resolve("nbd.sock"));
             QmpTestClient c = d.connect()) {
            exchange.run(c, j);
        }
        if (ExternalTools.present("qemu-storage-daemon")) {
            Path q = dir.resolve("q");
            try (QemuStorageDaemon p = QemuStorageDaemon.start(q, "--nbd-server",
                    "addr.type=unix,addr.path=" + q.resolve("nbd.sock")); QmpTestClient c = p.connect()) {
                exchange.run(c, q);
            }
        }
    }
}
