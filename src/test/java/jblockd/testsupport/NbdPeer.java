package jblockd.testsupport;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * One daemon of a differential test, jblockd or qemu-storage-daemon 7.2, with its QMP client
 * and an NBD server on {@code DIR/nbd.sock}: the same steps run on both and their answers are
 * compared.
 */
public final class NbdPeer implements AutoCloseable {
    private final String name;
    private final QmpTestClient qmp;
    private final Path dir;
    private final AutoCloseable process;

    private NbdPeer(String name, QmpTestClient qmp, Path dir, AutoCloseable process) {
        this.name = name;
        this.qmp = qmp;
        this.dir = dir;
        this.process = process;
    }

    /** jblockd in {@code parent/jblockd}. */
    public static NbdPeer jblockd(Path parent) throws IOException {
        Path d = Files.createDirectories(parent.resolve("jblockd"));
        DaemonProcess p = DaemonProcess.start(d, "--nbd-server", "addr.type=unix,addr.path=" + d.resolve("nbd.sock"));
        return new NbdPeer("jblockd", p.connect(), d, p);
    }

    /** qemu-storage-daemon in {@code parent/qsd}. */
    public static NbdPeer qsd(Path parent) throws IOException, InterruptedException {
        Path d = parent.resolve("qsd");
        QemuStorageDaemon p = QemuStorageDaemon.start(d, "--nbd-server",
                "addr.type=unix,addr.path=" + d.resolve("nbd.sock"));
        return new NbdPeer("qemu-storage-daemon", p.connect(), d, p);
    }

    public String name() {
        return name;
    }

    public QmpTestClient qmp() {
        return qmp;
    }

    public Path dir() {
        return dir;
    }

    /** The NBD URI of export {@code export} for qemu-io / qemu-img / nbdinfo. */
    public String nbd(String export) {
        return "nbd+unix:///" + export + "?socket=" + dir.resolve("nbd.sock");
    }

    @Override
    public void close() throws Exception {
        qmp.close();
        process.close();
    }
}
