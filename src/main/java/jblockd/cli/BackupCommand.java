package jblockd.cli;

import java.util.ArrayList;
import java.util.List;
import jblockd.client.DriveBackup;
import jblockd.client.Job;
import jblockd.client.QmpClient;
import jblockd.qapi.MirrorSyncMode;
import jblockd.qapi.NewImageMode;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/**
 * {@code jblockctl backup DEVICE TARGET}: drive-backup of a device of a running daemon.
 * {@code --image SOURCE TARGET} / {@code --demo}: one-shot mode with an embedded daemon.
 */
@Command(name = "backup", sortOptions = false,
        customSynopsis = {"jblockctl backup [OPTIONS] DEVICE TARGET",
                "       jblockctl backup --image SOURCE [OPTIONS] TARGET",
                "       jblockctl backup --demo [OPTIONS] [TARGET]"},
        header = "Point-in-time backup (drive-backup) of DEVICE into the image file TARGET, with progress.",
        description = "With --image, runs an embedded daemon on SOURCE instead of connecting to one, backs it up"
                + " and verifies TARGET against it (exit 0 only when identical); --demo does the same on a sample"
                + " image it creates in ./jblockd-demo/.")
final class BackupCommand extends JobStartCommand {

    @Parameters(arity = "0..2", paramLabel = "ARGS", hidden = true)
    List<String> positional = new ArrayList<>();

    @Option(names = "--sync", paramLabel = "MODE", converter = Converters.SyncMode.class,
            description = "full (default), top, none")
    MirrorSyncMode sync = MirrorSyncMode.FULL;

    @Option(names = "--format", paramLabel = "FMT", description = "Target format: raw, qcow2 (default: the source's)")
    String format;

    @Option(names = "--mode", paramLabel = "MODE", converter = Converters.ImageMode.class,
            description = "absolute-paths (default: create TARGET) or existing (use it as it is)")
    NewImageMode mode;

    @Mixin
    CopyErrorOptions errors = new CopyErrorOptions();

    @Option(names = "--compress", description = "Compress the target (qcow2)")
    boolean compress;

    @Option(names = "--image", paramLabel = "SOURCE",
            description = "One-shot: open SOURCE in an embedded daemon, back it up to TARGET, verify")
    String image;

    @Option(names = "--demo", description = "One-shot on a sample 64 MiB image created in ./jblockd-demo/")
    boolean demo;

    @Override
    public Integer call() throws Exception {
        if (image != null || demo) {
            return OneShotBackup.run(this);
        }
        if (positional.size() != 2) {
            throw new CliException("backup needs DEVICE and TARGET (or --image SOURCE TARGET, or --demo)", 2);
        }
        return super.call();
    }

    @Override
    Job start(QmpClient qmp) {
        return qmp.jobs().driveBackup(arguments(positional.get(0), positional.get(1)));
    }

    DriveBackup arguments(String device, String target) {
        DriveBackup a = common(DriveBackup.of(device, target)).sync(sync).format(format).mode(mode)
                .onSourceError(errors.onSourceError).onTargetError(errors.onTargetError);
        return compress ? a.compress(true) : a;
    }
}
