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
    private final Path toolSocket;

    private NbdPeer(String name, QmpTestClient qmp, Path dir, AutoCloseable process, Path toolSocket) {
        this.name = name;
        this.qmp = qmp;
        this.dir = dir;
        this.process = process;
        this.toolSocket = toolSocket;
    }

    /** jblockd in {@code parent/jblockd}. */
    public static NbdPeer jblockd(Path parent) throws IOException {
        Path d = Files.createDirectories(parent.resolve("jblockd"));
        DaemonProcess p = DaemonProcess.start(d, "--nbd-server", "addr.type=unix,addr.path=" + d.resolve("nbd.sock"));
        return new NbdPeer("jblockd", p.connect(), d, p, p.qmpSocket());
    }

    /** qemu-storage-daemon in {@code parent/qsd}, with a second monitor for tools ({@link #toolSocket}). */
    public static NbdPeer qsd(Path parent) throws IOException, InterruptedException {
        Path d = parent.resolve("qsd");
        Path second = d.resolve("qmp2.sock");
        QemuStorageDaemon p = QemuStorageDaemon.start(d, "--nbd-server",
                "addr.type=unix,addr.path=" + d.resolve("nbd.sock"),
                "--chardev", "socket,id=m2,path=" + second + ",server=on,wait=off", "--monitor", "chardev=m2,mode=control");
        return new NbdPeer("qemu-storage-daemon", p.connect(), d, p, second);
    }

    /** Steps a differential test runs on one daemon, returning what it saw. */
    public interface Steps<T> {
        T run(NbdPeer peer) throws Exception;
    }

    /** What the same steps saw on each daemon. */
    public record Both<T>(T qemu, T jblockd) {
    }

    /**
     * Runs {@code steps} on qemu-storage-daemon 7.2, then on jblockd, each in a daemon of its
     * own under {@code parent} (QEMU first: what it saw is the reference).
     */
    public static <T> Both<T> qemuThenJblockd(Path parent, Steps<T> steps) throws Exception {
        T qemu;
        try (NbdPeer p = qsd(parent)) {
            qemu = steps.run(p);
        }
        try (NbdPeer p = jblockd(parent)) {
            return new Both<>(qemu, steps.run(p));
        }
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

    /**
     * A QMP socket a tool (jblockctl) may connect to while {@link #qmp} stays connected: jblockd
     * serves many clients on one socket, a QEMU monitor only one, so QEMU gets a second monitor.
     */
    public Path toolSocket() {
        return toolSocket;
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
