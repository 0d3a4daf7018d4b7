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
        jblockd.block.nbd.NbdDriver.register(r);
        jblockd.block.rbd.RbdDriver.register(r);
    }
}
