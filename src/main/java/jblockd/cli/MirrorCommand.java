package jblockd.cli;

import jblockd.client.DriveMirror;
import jblockd.client.Job;
import jblockd.client.QmpClient;
import jblockd.qapi.MirrorSyncMode;
import jblockd.qapi.NewImageMode;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/** {@code jblockctl mirror DEVICE TARGET}: drive-mirror, followed until READY (or the end). */
@Command(name = "mirror", sortOptions = false,
        header = "Mirror DEVICE into the image file TARGET (drive-mirror) and keep it in sync.",
        description = "Waits until the mirror is READY and returns, leaving it in sync (then 'complete' pivots,"
                + " 'cancel' stops); --complete pivots at once when READY; --wait follows it to its end.")
final class MirrorCommand extends JobStartCommand {
    @Parameters(index = "0", paramLabel = "DEVICE")
    String device;

    @Parameters(index = "1", paramLabel = "TARGET")
    String target;

    @Option(names = "--sync", paramLabel = "MODE", converter = Converters.SyncMode.class,
            description = "full (default), top, none")
    MirrorSyncMode sync = MirrorSyncMode.FULL;

    @Option(names = "--format", paramLabel = "FMT", description = "Target format (default: the source's)")
    String format;

    @Option(names = "--mode", paramLabel = "MODE", converter = Converters.ImageMode.class,
            description = "absolute-paths (default) or existing")
    NewImageMode mode;

    @Option(names = "--node-name", paramLabel = "NODE", description = "node-name of the new target node")
    String nodeName;

    @Option(names = "--granularity", paramLabel = "SIZE", converter = Converters.Size.class,
            description = "Dirty-tracking granularity")
    Long granularity;

    @Option(names = "--buf-size", paramLabel = "SIZE", converter = Converters.Size.class,
            description = "Copy buffer size")
    Long bufSize;

    @Mixin
    CopyErrorOptions errors = new CopyErrorOptions();

    @Mixin
    ReadyOptions ready = new ReadyOptions();

    @Override
    JobWaiter.OnReady onReady() {
        return ready.onReady();
    }

    @Override
    Job start(QmpClient qmp) {
        DriveMirror a = common(DriveMirror.of(device, target, sync)).format(format).mode(mode)
                .nodeName(nodeName).onSourceError(errors.onSourceError).onTargetError(errors.onTargetError);
        if (granularity != null) {
            a.granularity(granularity);
        }
        if (bufSize != null) {
            a.bufSize(bufSize);
        }
        return qmp.jobs().driveMirror(a);
    }
}
