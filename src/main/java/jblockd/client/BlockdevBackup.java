package jblockd.client;

import jblockd.qapi.BitmapSyncMode;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.MirrorSyncMode;

/** Arguments of {@code blockdev-backup}: like drive-backup, into an existing node {@code target}. */
public final class BlockdevBackup extends JobArgs<BlockdevBackup> {

    private BlockdevBackup(String device, String target, MirrorSyncMode sync) {
        super(device);
        set("target", target);
        set("sync", sync);
    }

    /** {@code sync} is required by QEMU 7.2's schema for blockdev-backup. */
    public static BlockdevBackup of(String device, String targetNode, MirrorSyncMode sync) {
        return new BlockdevBackup(device, targetNode, sync);
    }

    public BlockdevBackup onSourceError(BlockdevOnError action) {
        return set("on-source-error", action);
    }

    public BlockdevBackup onTargetError(BlockdevOnError action) {
        return set("on-target-error", action);
    }

    public BlockdevBackup compress(boolean b) {
        return set("compress", b);
    }

    /** The dirty bitmap of {@code sync=incremental|bitmap} (or with full/top, synced per {@link #bitmapMode}). */
    public BlockdevBackup bitmap(String name) {
        return set("bitmap", name);
    }

    public BlockdevBackup bitmapMode(BitmapSyncMode mode) {
        return set("bitmap-mode", mode);
    }
}
