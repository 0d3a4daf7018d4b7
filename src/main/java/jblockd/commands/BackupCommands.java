package jblockd.commands;

import java.util.List;

import jblockd.block.NodeGraph;
import jblockd.device.Devices;
import jblockd.job.Job;
import jblockd.job.JobRegistry;
import jblockd.job.JobTxn;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.MirrorSyncMode;
import jblockd.qapi.NewImageMode;
import jblockd.qapi.QmpError;
import jblockd.qapi.TransactionActionKind;
import jblockd.qmp.CommandGroup;
import jblockd.qmp.CommandRegistry;

/**
 * drive-backup and blockdev-backup (seed 004, SPEC §4, reference/backup.md), and the same two
 * as {@code transaction} actions. Each command is a transaction of one {@link BackupAction}, as
 * QEMU 7.2 runs it (blockdev_do_action): the checks in QEMU's order, the job, the
 * copy-before-write filter in place before the reply, and the reply after
 * {@code J(created) J(running) J(paused) J(running)} (jobs.md §5) all come from there.
 */
public final class BackupCommands implements CommandGroup {

    /** x-perf; {@code cbwBufferSize} is jblockd's (BackupAction.DEFAULT_CBW_BUFFER). */
    public record BackupPerf(Boolean useCopyRange, Long maxWorkers, Long maxChunk, Long cbwBufferSize) {
    }

    public record DriveBackupArgs(String jobId, String device, String target, String format, MirrorSyncMode sync,
                                  NewImageMode mode, Long speed, String bitmap, String bitmapMode, Boolean compress,
                                  BlockdevOnError onSourceError, BlockdevOnError onTargetError,
                                  Boolean autoFinalize, Boolean autoDismiss, String filterNodeName,
                                  BackupPerf xPerf) {
    }

    public record BlockdevBackupArgs(String jobId, String device, String target, MirrorSyncMode sync, Long speed,
                                     String bitmap, String bitmapMode, Boolean compress,
                                     BlockdevOnError onSourceError, BlockdevOnError onTargetError,
                                     Boolean autoFinalize, Boolean autoDismiss, String filterNodeName,
                                     BackupPerf xPerf) {
    }

    private final NodeGraph graph;
    private final Devices devices;
    private final JobRegistry jobs;
    private final Transactions transactions;

    public BackupCommands(NodeGraph graph, Devices devices, JobRegistry jobs) {
        this.graph = graph;
        this.devices = devices;
        this.jobs = jobs;
        this.transactions = new Transactions(devices);
    }

    @Override
    public void register(CommandRegistry r) {
        r.register("drive-backup", DriveBackupArgs.class, a -> {
            driveBackup(a);
            return null;
        });
        r.register("blockdev-backup", BlockdevBackupArgs.class, a -> {
            blockdevBackup(a);
            return null;
        });
    }

    /** The two backups as {@code transaction} actions (their data: the commands' arguments). */
    public void registerActions(TransactionCommands t) {
        t.registerAction(TransactionActionKind.DRIVE_BACKUP, DriveBackupArgs.class, this::driveBackupAction);
        t.registerAction(TransactionActionKind.BLOCKDEV_BACKUP, BlockdevBackupArgs.class, this::blockdevBackupAction);
    }

    /** drive-backup: a transaction of one; returns the started job. */
    public Job driveBackup(DriveBackupArgs a) throws QmpError {
        BackupAction action = driveBackupAction(a, null);
        transactions.run(List.of(action), false);
        return action.job();
    }

    /** blockdev-backup: a transaction of one; returns the started job. */
    public Job blockdevBackup(BlockdevBackupArgs a) throws QmpError {
        BackupAction action = blockdevBackupAction(a, null);
        transactions.run(List.of(action), false);
        return action.job();
    }

    /** @param txn the grouped transaction's job transaction, or null */
    BackupAction driveBackupAction(DriveBackupArgs a, JobTxn txn) {
        return BackupAction.drive(graph, devices, jobs, txn, a);
    }

    /** @param txn the grouped transaction's job transaction, or null */
    BackupAction blockdevBackupAction(BlockdevBackupArgs a, JobTxn txn) {
        return BackupAction.blockdev(graph, devices, jobs, txn, a);
    }
}
