package jblockd.client;

import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.MirrorSyncMode;

/** Arguments of {@code blockdev-mirror}: like drive-mirror, into an existing node {@code target}. */
public final class BlockdevMirror extends JobArgs<BlockdevMirror> {

    private BlockdevMirror(String device, String target, MirrorSyncMode sync) {
        super(device);
        set("target", target);
        set("sync", sync);
    }

    public static BlockdevMirror of(String device, String targetNode, MirrorSyncMode sync) {
        return new BlockdevMirror(device, targetNode, sync);
    }

    public BlockdevMirror granularity(long bytes) {
        return set("granularity", bytes);
    }

    public BlockdevMirror bufSize(long bytes) {
        return set("buf-size", bytes);
    }

    public BlockdevMirror onSourceError(BlockdevOnError action) {
        return set("on-source-error", action);
    }

    public BlockdevMirror onTargetError(BlockdevOnError action) {
        return set("on-target-error", action);
    }
}
