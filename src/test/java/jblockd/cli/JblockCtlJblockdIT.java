package jblockd.cli;

import java.nio.file.Path;
import jblockd.client.JblockdPeer;
import jblockd.client.QmpPeer;

/** jblockctl against jblockd itself. */
class JblockCtlJblockdIT extends JblockCtlContract {
    @Override
    QmpPeer startPeer(Path dir, Path image) throws Exception {
        return JblockdPeer.start(dir, image);
    }
}
