package jblockd.nbd.server;

import java.net.UnixDomainSocketAddress;
import java.nio.file.Path;

import jblockd.block.BlockNode;
import jblockd.block.file.FileDriver;
import jblockd.device.Device;
import jblockd.device.GuestIo;
import jblockd.device.RunState;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.QapiEvents;

/** Manual tool: serves one raw file over a UNIX socket until killed (java -cp ... ServeFile SOCK FILE). */
public final class ServeFile {
    private ServeFile() {
    }

    public static void main(String[] args) throws Exception {
        NbdServer server = new NbdServer();
        server.start(UnixDomainSocketAddress.of(Path.of(args[0])), 0);
        BlockNode node = new BlockNode("file0", false, FileDriver.open(Path.of(args[1]), false), false);
        Device d = new Device("drive0", node, BlockdevOnError.REPORT, BlockdevOnError.ENOSPC);
        server.addExport(new NbdExport("", "", null, true,
                new GuestIo(d, new RunState(QapiEvents.NONE, () -> { }), QapiEvents.NONE)));
        Thread.sleep(Long.MAX_VALUE);
    }
}
