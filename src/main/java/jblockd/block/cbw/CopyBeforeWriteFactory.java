package jblockd.block.cbw;

import java.io.IOException;

import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.DriverRegistry;
import jblockd.block.Errno;
import jblockd.block.IoError;
import jblockd.block.OpenContext;
import jblockd.block.bitmap.BlockDirtyBitmap;

/**
 * {@code blockdev-add driver=copy-before-write} (QEMU cbw_open): a copy-before-write filter
 * over {@code file} that copies into {@code target}, with QEMU 7.2's checks in its order and
 * words. QEMU checks neither the target's size nor that it differs from the source here (a
 * backup does, in its own checks); a copy past a smaller target's end fails the guest write
 * (or breaks the snapshot), as in QEMU.
 */
public final class CopyBeforeWriteFactory {
    /** block-copy's cluster floor (BLOCK_COPY_CLUSTER_SIZE_DEFAULT). */
    static final int MIN_CLUSTER = 64 * 1024;
    /** Copies a guest's writes may have in flight at once (the buffer pool's bound). */
    static final int MAX_COPIES = 8;

    private CopyBeforeWriteFactory() {
    }

    public static void register(DriverRegistry r) {
        r.<BlockdevOptions.CopyBeforeWrite>register("copy-before-write", CopyBeforeWriteFactory::open);
    }

    static CopyBeforeWriteDriver open(BlockdevOptions.CopyBeforeWrite o, OpenContext ctx) throws IOException {
        BlockNode file = ctx.child(o.file(), "file", o.common().readOnly());
        if (file == null) {
            throw new IoError(Errno.EINVAL, "Parameter 'file' is missing");
        }
        BlockNode target = ctx.child(o.target(), "target", false);
        if (target == null) {
            throw new IoError(Errno.EINVAL, "Parameter 'target' is missing");
        }
        // the target is always written (BDRV_CHILD_DATA opened read-write)
        if (target.readOnly()) {
            throw new IoError(Errno.EPERM, "Block node is read-only");
        }
        BlockDirtyBitmap bitmap = null;
        if (o.bitmap() != null) {
            String node = o.bitmap().node();
            String name = o.bitmap().name();
            BlockNode owner = ctx.node(node)
                    .orElseThrow(() -> new IoError(Errno.ENOENT, "Node '" + node + "' not found"));
            bitmap = owner.bitmaps().find(name)
                    .orElseThrow(() -> new IoError(Errno.ENOENT, "Dirty bitmap '" + name + "' not found"));
            if (bitmap.inconsistent()) {
                throw new IoError(Errno.EINVAL, "Cannot create block-copy-state: Failed to merge bitmap '" + name
                        + "' to internal copy-bitmap: Bitmap '" + name + "' is inconsistent and cannot be used");
            }
        }
        int cluster = Math.max(MIN_CLUSTER, target.driver().clusterSize());
        BlockCopy copy = new BlockCopy(file, target, file.length(), cluster, BlockCopy.MAX_CHUNK, MAX_COPIES,
                false);
        if (bitmap != null) {
            // block_copy_state_new(): the bitmap is merged into the copy bitmap once, here; the
            // named bitmap stays the user's (not busy, may go on changing)
            copy.restrictTo(bitmap.bits());
        }
        CopyBeforeWriteDriver.OnCbwError onError = o.onCbwError() == null
                ? CopyBeforeWriteDriver.OnCbwError.BREAK_GUEST_WRITE
                : CopyBeforeWriteDriver.OnCbwError.of(o.onCbwError());
        return new CopyBeforeWriteDriver(file, copy, onError, o.cbwTimeout() == null ? 0 : o.cbwTimeout());
    }
}
