package jblockd.block.snapshotaccess;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.List;

import jblockd.block.Access;
import jblockd.block.BlockChild;
import jblockd.block.BlockDriver;
import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.Capabilities;
import jblockd.block.DriverRegistry;
import jblockd.block.Errno;
import jblockd.block.Extent;
import jblockd.block.IoError;
import jblockd.block.OpenContext;
import jblockd.block.cbw.CopyBeforeWriteDriver;

/**
 * The {@code snapshot-access} driver (QEMU block/snapshot-access.c): the point-in-time view a
 * copy-before-write {@code file} keeps, for an NBD export to pull. Reads, block status and
 * discards go to the filter's snapshot view; writes are not supported. Over a node that keeps
 * no snapshot the node opens, and every request fails with ENOTSUP, as in QEMU.
 * Not a filter: its file child is its data (QEMU's BDRV_CHILD_DATA | BDRV_CHILD_PRIMARY).
 */
public final class SnapshotAccessDriver implements BlockDriver {
    private final BlockNode file;

    private SnapshotAccessDriver(BlockNode file) {
        this.file = file;
    }

    public static void register(DriverRegistry r) {
        r.<BlockdevOptions.SnapshotAccess>register("snapshot-access", SnapshotAccessDriver::open);
    }

    static SnapshotAccessDriver open(BlockdevOptions.SnapshotAccess o, OpenContext ctx) throws IOException {
        BlockNode file = ctx.child(o.file(), "file", o.common().readOnly());
        if (file == null) {
            throw new IoError(Errno.EINVAL, "Parameter 'file' is missing");
        }
        return new SnapshotAccessDriver(file);
    }

    private CopyBeforeWriteDriver snapshot() throws IoError {
        if (file.driver() instanceof CopyBeforeWriteDriver cbw) {
            return cbw;
        }
        throw new IoError(Errno.ENOTSUP, Errno.ENOTSUP.strerror());
    }

    @Override
    public String driverName() {
        return "snapshot-access";
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        snapshot().snapshotRead(offset, dst);
    }

    @Override
    public void write(long offset, ByteBuffer src, boolean fua) throws IOException {
        throw new IoError(Errno.ENOTSUP, Errno.ENOTSUP.strerror());
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        throw new IoError(Errno.ENOTSUP, Errno.ENOTSUP.strerror());
    }

    /** The reader gives up the range: the filter frees the target's copy of it. */
    @Override
    public void discard(long offset, long length) throws IOException {
        snapshot().snapshotDiscard(offset, length);
    }

    /** No flush of its own: block/io.c flushes the primary child. */
    @Override
    public void flush() throws IOException {
        file.flush();
    }

    @Override
    public long length() throws IOException {
        return file.length();
    }

    @Override
    public Extent status(long offset, long length) throws IOException {
        return snapshot().snapshotStatus(offset, length);
    }

    @Override
    public Capabilities capabilities() {
        Capabilities c = file.capabilities();
        return new Capabilities(false, true, false, false, c.requestAlignment(), false);
    }

    @Override
    public void close() {
        // the graph closes the file child
    }

    @Override
    public String filename() {
        return file.driver().filename();
    }

    @Override
    public List<BlockChild> children() {
        return List.of(new BlockChild("file", file));
    }

    /** No get_info in QEMU's driver: query-block shows no dirty-flag (nor cluster-size). */
    @Override
    public java.util.Optional<Boolean> dirtyFlag() {
        return java.util.Optional.empty();
    }

    /** QEMU sums a non-filter's data children: the filter's, so the source's. */
    @Override
    public java.util.OptionalLong allocatedFileSize() throws IOException {
        return file.driver().allocatedFileSize();
    }

    /** snapshot_access_child_perm(): the snapshot API needs no permission on the filter. */
    @Override
    public Access childAccess(BlockChild child, boolean writable, Access parentUse) {
        return Access.PASSIVE;
    }
}
