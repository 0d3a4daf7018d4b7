package jblockd.cli;

import java.util.ArrayList;
import java.util.List;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Path;
import jblockd.client.BlockdevBackup;
import jblockd.client.DriveBackup;
import jblockd.client.ImageFiles;
import jblockd.client.NodeLookup;
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
                "       jblockctl backup --incremental CHK --previous PREV [OPTIONS] DEVICE TARGET",
                "       jblockctl backup --image SOURCE [OPTIONS] TARGET",
                "       jblockctl backup --demo [OPTIONS] [TARGET]"},
        header = "Point-in-time backup (drive-backup) of DEVICE into the image file TARGET, with progress.",
        description = "With --image, runs an embedded daemon on SOURCE instead of connecting to one, backs it up"
                + " and verifies TARGET against it (exit 0 only when identical); --demo does the same on a sample"
                + " image it creates in ./jblockd-demo/. With --incremental, the daemon creates TARGET as a qcow2"
                + " over PREV and copies into it only what checkpoint bitmap CHK recorded (blockdev-backup"
                + " sync=incremental: on success CHK restarts from the backup's start, on failure it keeps its"
                + " bits); the chain is shown at the end.")
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

    @Option(names = "--incremental", paramLabel = "CHK",
            description = "Copy only what the dirty bitmap CHK recorded, into a new qcow2 TARGET over --previous")
    String incremental;

    @Option(names = "--previous", paramLabel = "PREV",
            description = "With --incremental: the previous backup of the chain, TARGET's backing file")
    String previous;

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
        if ((incremental == null) != (previous == null)) {
            throw new CliException("--incremental and --previous go together", 2);
        }
        if (incremental != null) {
            if (sync != MirrorSyncMode.FULL || format != null || mode != null || compress) {
                throw new CliException("--incremental sets the sync mode, format and target itself", 2);
            }
            return incrementalBackup();
        }
        return super.call();
    }

    /**
     * The push-mode incremental (QEMU's bitmaps.rst "incremental backups"): TARGET, made by the
     * daemon as a qcow2 whose backing file is PREV, is attached without its backing (so the job
     * writes a pure delta), blockdev-backup sync=incremental copies CHK's clusters, TARGET leaves
     * the graph again and the chain is printed.
     */
    private int incrementalBackup() throws Exception {
        String device = positional.get(0);
        String target = positional.get(1);
        try (QmpClient qmp = top.connect()) {
            long size = NodeLookup.resolve(qmp, device).size();
            String node = "jblockctl-incremental";
            ImageFiles.createQcow2(qmp, Path.of(target), size, previous, node);
            ObjectNode add = JsonNodeFactory.instance.objectNode().put("driver", "qcow2").put("node-name", node);
            add.putNull("backing");
            add.putObject("file").put("driver", "file").put("filename", target);
            qmp.execute("blockdev-add", add);
            int rc;
            boolean jobKeepsNode = false;
            try {
                BlockdevBackup args = common(BlockdevBackup.of(device, node, MirrorSyncMode.INCREMENTAL))
                        .bitmap(incremental).onSourceError(errors.onSourceError).onTargetError(errors.onTargetError);
                if (jobId == null) {
                    args.jobId(device); // a node name has no device name to default to
                }
                Job job = qmp.jobs().blockdevBackup(args);
                if (detach) {
                    jobKeepsNode = true;
                    top.out.println(job.id() + ": started; 'blockdev-del " + node + "' once it has ended");
                    return 0;
                }
                rc = JobWaiter.await(List.of(job), top.progressView(), onReady(), false);
            } finally {
                if (!jobKeepsNode) {
                    qmp.execute("blockdev-del", java.util.Map.of("node-name", node));
                }
            }
            if (rc == 0 && !top.json) {
                top.out.println("chain: " + String.join(" -> ", ImageChain.of(Path.of(target))));
            }
            return rc;
        }
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
