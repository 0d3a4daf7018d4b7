package jblockd.block;

/** The one place that lists the drivers jblockd ships. */
final class StandardDrivers {
    private StandardDrivers() {
    }

    static void registerAll(DriverRegistry r) {
        jblockd.block.file.FileDriver.register(r);
        jblockd.block.raw.RawDriver.register(r);
        jblockd.block.blkdebug.BlkdebugDriver.register(r);
        jblockd.block.nullco.NullCoDriver.register(r);
        jblockd.block.qcow2.Qcow2Driver.register(r);
        jblockd.block.cbw.CopyBeforeWriteFactory.register(r);
        jblockd.block.snapshotaccess.SnapshotAccessDriver.register(r);
        // The NBD client driver's filename syntaxes (nbd://, nbd+tcp://, nbd+unix://, nbd:H:P /
        // nbd:unix:S): the driver registers its parser under these names when it lands; until
        // then they are refused plainly rather than as an unknown protocol.
        for (String nbd : new String[] {"nbd", "nbd+tcp", "nbd+unix"}) {
            r.registerProtocol(nbd, (filename, common, filenames) -> {
                throw new IoError(Errno.ENOTSUP, "Unknown protocol '" + nbd
                        + "': jblockd has no NBD client driver (nbd filenames cannot be opened)");
            });
        }
    }
}
