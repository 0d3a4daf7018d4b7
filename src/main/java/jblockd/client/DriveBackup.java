package jblockd.client;

import jblockd.qapi.BitmapSyncMode;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.MirrorSyncMode;
import jblockd.qapi.NewImageMode;

/**
 * Arguments of {@code drive-backup} (seed 004, qapi/block-core.json DriveBackup): a
 * point-in-time copy of {@code device} into the image file {@code target}, created unless
 * {@code mode=existing}. {@code sync} may be left out and then means {@code full} (seed rule;
 * QEMU 7.2 itself requires it, so set it when talking to QEMU).
 */
public final class DriveBackup extends JobArgs<DriveBackup> {

    private DriveBackup(String device, String target) {
        super(device);
        set("target", target);
    }

    public static DriveBackup of(String device, String target) {
        return new DriveBackup(device, target);
    }

    /** Image format of the target (default: the source's, or probed with {@code mode=existing}). */
    public DriveBackup format(String format) {
        return set("format", format);
    }

    public DriveBackup sync(MirrorSyncMode sync) {
        return set("sync", sync);
    }

    public DriveBackup mode(NewImageMode mode) {
        return set("mode", mode);
    }

    public DriveBackup onSourceError(BlockdevOnError action) {
        return set("on-source-error", action);
    }

    public DriveBackup onTargetError(BlockdevOnError action) {
        return set("on-target-error", action);
    }

    public DriveBackup compress(boolean b) {
        return set("compress", b);
    }

    /** The dirty bitmap of {@code sync=incremental|bitmap} (or with full/top, synced per {@link #bitmapMode}). */
    public DriveBackup bitmap(String name) {
        return set("bitmap", name);
    }

    public DriveBackup bitmapMode(BitmapSyncMode mode) {
        return set("bitmap-mode", mode);
    }
}
