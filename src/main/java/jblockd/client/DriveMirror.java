package jblockd.client;

import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.MirrorSyncMode;
import jblockd.qapi.NewImageMode;

/**
 * Arguments of {@code drive-mirror}: copy {@code device} into the image file {@code target}
 * and keep it in sync; the job reports READY and then waits for complete (pivot) or cancel.
 */
public final class DriveMirror extends JobArgs<DriveMirror> {

    private DriveMirror(String device, String target, MirrorSyncMode sync) {
        super(device);
        set("target", target);
        set("sync", sync);
    }

    public static DriveMirror of(String device, String target, MirrorSyncMode sync) {
        return new DriveMirror(device, target, sync);
    }

    public DriveMirror format(String format) {
        return set("format", format);
    }

    public DriveMirror mode(NewImageMode mode) {
        return set("mode", mode);
    }

    /** node-name of the new target node. */
    public DriveMirror nodeName(String nodeName) {
        return set("node-name", nodeName);
    }

    public DriveMirror granularity(long bytes) {
        return set("granularity", bytes);
    }

    public DriveMirror bufSize(long bytes) {
        return set("buf-size", bytes);
    }

    public DriveMirror onSourceError(BlockdevOnError action) {
        return set("on-source-error", action);
    }

    public DriveMirror onTargetError(BlockdevOnError action) {
        return set("on-target-error", action);
    }
}
