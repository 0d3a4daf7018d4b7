package jblockd.client;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Path;

/** The client contract against real QEMU 7.2 ({@code qemu-system-x86_64 -M none}). */
class QmpClientQemuIT extends QmpClientContract {
    @Override
    QmpPeer startPeer(Path dir, Path image) throws Exception {
        assumeTrue(QemuPeer.available(), "qemu-system-x86_64 not installed");
        return QemuPeer.start(dir, image);
    }
}
