package jblockd.cli;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Path;
import jblockd.client.QemuPeer;
import jblockd.client.QmpPeer;

/** jblockctl against real QEMU 7.2: proves it drives real QMP. */
class JblockCtlQemuIT extends JblockCtlContract {
    @Override
    QmpPeer startPeer(Path dir, Path image) throws Exception {
        assumeTrue(QemuPeer.available(), "qemu-system-x86_64 not installed");
        return QemuPeer.start(dir, image);
    }
}
