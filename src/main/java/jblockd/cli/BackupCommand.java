package jblockd.cli;

import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Path;
import jblockd.client.BlockdevBackup;
import jblockd.client.DriveBackup;
import jblockd.client.ImageFiles;
import jblockd.client.NodeLookup;
import jblockd.client.Job;
import jblockd.client.QmpClient;
import jblockd.client.RbdSnapshots;
import jblockd.qapi.BitmapSyncMode;
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
                + " bits); the chain is shown at the end. When DEVICE is an RBD image (an rbd node, or raw over"
                + " one), the backup reads an RBD snapshot instead of copying before guest writes (docs/rbd.md):"
                + " the snapshot is taken, opened read-only, backed up, closed, and deleted unless --snapshot"
                + " names it; --incremental PREVSNAP then copies what changed since the RBD snapshot PREVSNAP,"
                + " keeps the new snapshot and deletes PREVSNAP. --copy-before-write forces the QEMU way.")
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

    @Option(names = "--snapshot", paramLabel = "NAME",
            description = "RBD: the name of the snapshot the backup reads; it is kept, for a later --incremental NAME"
                    + " (default: a jblockctl-<time> name, deleted after a full backup, kept after an incremental)")
    String snapshot;

    @Option(names = "--keep-previous",
            description = "RBD --incremental: keep the previous snapshot (default: deleted once the new backup is done)")
    boolean keepPrevious;

    @Option(names = "--key-secret", paramLabel = "ID",
            description = "RBD: the daemon's secret object holding the key, when the conf file's keyring has none")
    String keySecret;

    @Option(names = "--copy-before-write",
            description = "RBD: back up with drive-backup's copy-before-write, as QEMU does, not from a snapshot")
    boolean copyBeforeWrite;

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
        }
        if (!copyBeforeWrite && (sync == MirrorSyncMode.FULL || incremental != null)) {
            try (QmpClient qmp = top.connect()) {
                Optional<RbdSnapshots> rbd = RbdSnapshots.of(qmp, positional.get(0));
                if (rbd.isPresent()) {
                    if (detach) {
                        throw new CliException("--detach: an RBD snapshot backup removes its snapshot node when"
                                + " the job ends, so it follows the job (or give --copy-before-write)", 2);
                    }
                    return incremental != null ? rbdIncremental(qmp, rbd.get()) : rbdFull(qmp, rbd.get());
                }
            }
        }
        if (snapshot != null || keepPrevious || keySecret != null) {
            throw new CliException("--snapshot, --keep-previous and --key-secret are for a backup of an RBD device", 2);
        }
        return incremental != null ? incrementalBackup() : super.call();
    }

    /** The node an RBD snapshot backup opens its snapshot as. */
    private static final String SNAPSHOT_NODE = "jblockctl-rbd-snapshot";

    /**
     * A point-in-time backup from an RBD snapshot: no copy-before-write filter, the guest's
     * writes go on untouched while the job reads the snapshot.
     */
    private int rbdFull(QmpClient qmp, RbdSnapshots rbd) throws Exception {
        String name = snapshot != null ? snapshot : RbdSnapshots.newName();
        rbd.take(name);
        int rc;
        try {
            rbd.open(name, SNAPSHOT_NODE, keySecret);
            try {
                DriveBackup args = arguments(SNAPSHOT_NODE, positional.get(1));
                if (jobId == null) {
                    args.jobId(rbd.device());
                }
                rc = JobWaiter.await(List.of(qmp.jobs().driveBackup(args)), top.progressView(), onReady(), false);
            } finally {
                rbd.close(SNAPSHOT_NODE);
            }
        } finally {
            if (snapshot == null) {
                rbd.delete(name);
            }
        }
        if (rc == 0 && snapshot != null && !top.json) {
            top.out.println("RBD snapshot " + name + " kept: the next backup can be --incremental " + name
                    + " --previous " + positional.get(1));
        }
        return rc;
    }

    /**
     * A snapshot-diff incremental: a new RBD snapshot, opened read-only; its diff bitmap named
     * after the previous snapshot (what changed since it, from rbd_diff_iterate2) drives
     * blockdev-backup sync=bitmap bitmap-mode=never into a new qcow2 over --previous. On success
     * the new snapshot is kept and the previous one deleted (only the newest is needed for the
     * next incremental; the chain of files restores without any); on failure the new one goes.
     */
    private int rbdIncremental(QmpClient qmp, RbdSnapshots rbd) throws Exception {
        String device = positional.get(0);
        String target = positional.get(1);
        String name = snapshot != null ? snapshot : RbdSnapshots.newName();
        rbd.take(name);
        int rc = 1;
        try {
            rbd.open(name, SNAPSHOT_NODE, keySecret);
            try {
                long size = NodeLookup.resolve(qmp, SNAPSHOT_NODE).size();
                String node = "jblockctl-incremental";
                ImageFiles.createQcow2(qmp, Path.of(target), size, previous, node);
                ObjectNode add = JsonNodeFactory.instance.objectNode().put("driver", "qcow2").put("node-name", node);
                add.putNull("backing");
                add.putObject("file").put("driver", "file").put("filename", target);
                qmp.execute("blockdev-add", add);
                try {
                    BlockdevBackup args = common(BlockdevBackup.of(SNAPSHOT_NODE, node, MirrorSyncMode.BITMAP))
                            .bitmap(incremental).bitmapMode(BitmapSyncMode.NEVER)
                            .onSourceError(errors.onSourceError).onTargetError(errors.onTargetError);
                    if (jobId == null) {
                        args.jobId(device);
                    }
                    rc = JobWaiter.await(List.of(qmp.jobs().blockdevBackup(args)), top.progressView(), onReady(),
                            false);
                } finally {
                    qmp.execute("blockdev-del", java.util.Map.of("node-name", node));
                }
            } finally {
                rbd.close(SNAPSHOT_NODE);
            }
        } finally {
            if (rc != 0) {
                rbd.delete(name);
            }
        }
        if (rc != 0) {
            return rc;
        }
        if (!keepPrevious) {
            rbd.delete(incremental);
        }
        if (!top.json) {
            top.out.println("chain: " + String.join(" -> ", ImageChain.of(Path.of(target))));
            top.out.println("RBD snapshot " + name + " kept: the next backup can be --incremental " + name
                    + " --previous " + target);
        }
        return 0;
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
