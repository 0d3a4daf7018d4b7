package jblockd.commands;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;

import jblockd.block.Access;
import jblockd.block.BlockNode;
import jblockd.block.ImageCreator;
import jblockd.block.IoError;
import jblockd.block.NodeGraph;
import jblockd.block.cbw.BlockCopy;
import jblockd.commands.BackupCommands.BackupPerf;
import jblockd.commands.BackupCommands.BlockdevBackupArgs;
import jblockd.commands.BackupCommands.DriveBackupArgs;
import jblockd.device.Device;
import jblockd.device.Devices;
import jblockd.job.Job;
import jblockd.job.JobRegistry;
import jblockd.job.JobTxn;
import jblockd.job.JobUse;
import jblockd.job.backup.BackupGraph;
import jblockd.job.backup.BackupJob;
import jblockd.qapi.BitmapSyncMode;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.ErrorClass;
import jblockd.qapi.MirrorSyncMode;
import jblockd.block.bitmap.BitmapException;
import jblockd.block.bitmap.BlockDirtyBitmap;
import jblockd.job.backup.SyncBitmap;
import jblockd.qapi.NewImageMode;
import jblockd.qapi.QmpError;
import jblockd.qapi.TransactionActionKind;

/**
 * One backup (seed 004, SPEC §4, reference/backup.md) as a transaction action, QEMU 7.2's
 * drive_backup_prepare/commit/abort/clean and blockdev_backup_*: drive-backup and
 * blockdev-backup are each a transaction of one such action, as QEMU runs them
 * (blockdev_do_action), and the {@code transaction} command runs several. So the checks, the
 * job and the filter of a backup come from here alone.
 * <ul>
 *   <li>prepare: QEMU 7.2's order of checks: device lookup, bitmap arguments, target creation or
 *       opening, job creation (id, speed); then the copy-before-write filter goes in above the
 *       source and the job waits, {@code created} and drained ({@code J(created)}).</li>
 *   <li>commit: the job starts and stops at once at its entry pause point, since the
 *       transaction still drains it ({@code J(running) J(paused)}); no copy has happened.</li>
 *   <li>abort: the created job is thrown away ({@code J(aborting) J(concluded) J(null)}, no end
 *       event): filter out, target closed (a target file drive-backup created stays, as in
 *       QEMU); with a grouped job transaction, its other members go too.</li>
 *   <li>clean: the job's drain ends ({@code J(running)}).</li>
 * </ul>
 * So drive-backup replies after {@code J(created) J(running) J(paused) J(running)} (jobs.md §5),
 * and a transaction of two after {@code J(created jA) J(created jB) J(running jA) J(paused jA)
 * J(running jB) J(paused jB) J(running jA) J(running jB)} (transactions.md §4).
 */
final class BackupAction implements TransactionAction {
    /** Backup cluster floor (QEMU block-copy: max(64 KiB, target cluster size)). */
    static final int MIN_CLUSTER = 64 * 1024;
    /**
     * Chunk copies in flight per job: QEMU's default max-workers. Each runs on a platform thread
     * of its own ({@link jblockd.job.CopyWorkers}); buffers are sized to the copy, so a scattered
     * copy holds 64 clusters in flight and a sequential one at most 66 MiB.
     */
    static final int DEFAULT_WORKERS = 64;
    /**
     * x-perf.max-workers above this runs as this many: QEMU starts that many copy coroutines,
     * but their file I/O waits for its thread pool of at most 64 threads (aio=threads, QEMU's
     * default), so no more than 64 copies do I/O at once there either (README: differences).
     */
    static final int MAX_WORKERS = 64;
    /**
     * x-perf.cbw-buffer-size when not given (jblockd's, docs/backup.md): old data of up to 64 MiB
     * of guest writes waits in memory for a slow target instead of the guest waiting. As much as
     * the copies in flight of one job may hold, so a backup's memory stays within twice that.
     */
    static final long DEFAULT_CBW_BUFFER = 64L << 20;
    /** The largest x-perf.cbw-buffer-size: direct memory the JVM must be able to give. */
    static final long MAX_CBW_BUFFER = 16L << 30;

    /** The arguments both commands share once the target node is known. */
    private record Common(String jobId, MirrorSyncMode sync, long speed, boolean compress,
                          BlockdevOnError onSourceError, BlockdevOnError onTargetError, boolean autoFinalize,
                          boolean autoDismiss, String filterNodeName, BackupPerf xPerf,
                          BlockDirtyBitmap bitmap, BitmapSyncMode bitmapMode) {
    }

    private final NodeGraph graph;
    private final Devices devices;
    private final JobRegistry jobs;
    private final JobTxn txn;
    /** Exactly one of the two is set. */
    private final DriveBackupArgs drive;
    private final BlockdevBackupArgs blockdev;
    /** Set by a successful prepare. */
    private Job job;

    private BackupAction(NodeGraph graph, Devices devices, JobRegistry jobs, JobTxn txn, DriveBackupArgs drive,
                         BlockdevBackupArgs blockdev) {
        this.graph = graph;
        this.devices = devices;
        this.jobs = jobs;
        this.txn = txn;
        this.drive = drive;
        this.blockdev = blockdev;
    }

    /**
     * @param txn the job transaction the job joins: the grouped transaction's, or null for a job
     *            that ends on its own
     */
    static BackupAction drive(NodeGraph graph, Devices devices, JobRegistry jobs, JobTxn txn, DriveBackupArgs a) {
        return new BackupAction(graph, devices, jobs, txn, a, null);
    }

    static BackupAction blockdev(NodeGraph graph, Devices devices, JobRegistry jobs, JobTxn txn,
                                 BlockdevBackupArgs a) {
        return new BackupAction(graph, devices, jobs, txn, null, a);
    }

    @Override
    public TransactionActionKind kind() {
        return drive != null ? TransactionActionKind.DRIVE_BACKUP : TransactionActionKind.BLOCKDEV_BACKUP;
    }

    @Override
    public boolean allowsGroupedCompletion() {
        return true;
    }

    /** The source and, for blockdev-backup, the target node. */
    @Override
    public List<BlockNode> nodes() {
        List<BlockNode> out = new ArrayList<>();
        devices.lookupNode(drive != null ? drive.device() : blockdev.device()).ifPresent(out::add);
        if (blockdev != null) {
            devices.lookupNode(blockdev.target()).ifPresent(out::add);
        }
        return out;
    }

    /** The job a successful prepare created. */
    Job job() {
        return job;
    }

    @Override
    public void prepare() throws QmpError {
        job = drive != null ? prepareDrive(drive) : prepareBlockdev(blockdev);
        // Created inside the transaction's drained section, the job is drained from the start
        // (QEMU: the drain reaches a job through its nodes) until clean.
        job.drainBegin();
    }

    @Override
    public void commit() {
        jobs.start(job);
        // QEMU job_start() enters the job, which meets its pause point at once: J(paused) before
        // the next action commits. The pause was requested before the thread started, so the job
        // does no I/O before the transaction ends.
        job.awaitPaused(5, TimeUnit.SECONDS);
    }

    @Override
    public void abort() {
        jobs.abortUnstarted(job);
    }

    @Override
    public void clean() {
        job.drainEnd();
    }

    // ------------------------------------------------------------------ prepare

    private Job prepareDrive(DriveBackupArgs a) throws QmpError {
        BlockNode source = lookupSource(a.device());
        MirrorSyncMode sync = a.sync() == null ? MirrorSyncMode.FULL : a.sync(); // seed 004
        BitmapArgs bm = bitmapArgs(source, sync, a.bitmap(), a.bitmapMode());
        jobs.checkNotBusy(source, displayName(source));

        NewImageMode mode = a.mode() == null ? NewImageMode.ABSOLUTE_PATHS : a.mode();
        if (a.format() != null && !graph.drivers().isFormat(a.format())) {
            throw QmpError.generic("Unknown file format '" + a.format() + "'");
        }
        // QEMU drive_backup_prepare(): sync=top without a backing file is a full backup.
        BlockNode backing = source.driver().backing();
        if (sync == MirrorSyncMode.TOP && backing == null) {
            sync = MirrorSyncMode.FULL;
        }
        String filename = a.target();
        boolean fresh;
        if (mode == NewImageMode.ABSOLUTE_PATHS) {
            String format = a.format() != null ? a.format() : source.driver().formatName();
            Path path;
            try {
                path = graph.filenames().creationPath(filename);
            } catch (IOException e) {
                throw QmpError.generic(IoError.wrap(e).getMessage());
            }
            createTarget(path, format, source, sync, backing);
            // A new image without backing file reads as zeroes: zero ranges need no write.
            fresh = sync == MirrorSyncMode.FULL;
        } else {
            fresh = false;
        }
        BlockNode target;
        try {
            target = graph.add(graph.imageOptions(filename, mode == NewImageMode.ABSOLUTE_PATHS && a.format() == null
                    ? source.driver().formatName() : a.format(), false, false, false, null, source.unmap()));
        } catch (IOException e) {
            throw QmpError.generic(openError(filename, e));
        }
        Common c = new Common(a.jobId(), sync, a.speed() == null ? 0 : a.speed(), Boolean.TRUE.equals(a.compress()),
                a.onSourceError(), a.onTargetError(), a.autoFinalize() == null || a.autoFinalize(),
                a.autoDismiss() == null || a.autoDismiss(), a.filterNodeName(), a.xPerf(), bm.bitmap(), bm.mode());
        try {
            return create(source, target, true, fresh, c);
        } catch (QmpError | RuntimeException e) {
            closeQuietly(target);
            throw e;
        }
    }

    private Job prepareBlockdev(BlockdevBackupArgs a) throws QmpError {
        BlockNode source = lookupSource(a.device());
        MirrorSyncMode sync = a.sync() == null ? MirrorSyncMode.FULL : a.sync();
        BitmapArgs bm = bitmapArgs(source, sync, a.bitmap(), a.bitmapMode());
        Optional<BlockNode> t = devices.lookupNode(a.target());
        if (t.isEmpty()) {
            throw QmpError.generic("Cannot find device='" + a.target() + "' nor node-name='" + a.target() + "'");
        }
        BlockNode target = t.get();
        if (target == source) {
            throw QmpError.generic("Source and target cannot be the same");
        }
        jobs.checkNotBusy(source, displayName(source));
        jobs.checkNotBusy(target, displayName(target));
        // Unlike drive-backup, sync=top stays top without a backing file: only what the image
        // allocates is copied (QEMU 7.2 blockdev-backup, observed: len = allocated bytes).
        Common c = new Common(a.jobId(), sync, a.speed() == null ? 0 : a.speed(), Boolean.TRUE.equals(a.compress()),
                a.onSourceError(), a.onTargetError(), a.autoFinalize() == null || a.autoFinalize(),
                a.autoDismiss() == null || a.autoDismiss(), a.filterNodeName(), a.xPerf(), bm.bitmap(), bm.mode());
        return create(source, target, false, false, c);
    }

    /** backup_job_create(): the last checks, the job, and the copy-before-write filter in place. */
    private Job create(BlockNode source, BlockNode target, boolean ownsTarget, boolean fresh, Common c)
            throws QmpError {
        long len;
        long targetLen;
        try {
            len = source.length();
            targetLen = target.length();
        } catch (IOException e) {
            throw QmpError.generic(IoError.wrap(e).errno().strerror());
        }
        if (len != targetLen && !ownsTarget) {
            throw QmpError.generic("Source and target image have different sizes");
        }
        if (target.readOnly()) {
            throw QmpError.generic("Target node '" + target.nodeName() + "' is read-only");
        }
        int cluster = Math.max(MIN_CLUSTER, target.driver().clusterSize());
        int chunk = BlockCopy.MAX_CHUNK;
        int workers = DEFAULT_WORKERS;
        Long cbwBuffer = c.xPerf() == null ? null : c.xPerf().cbwBufferSize();
        if (cbwBuffer != null && (cbwBuffer < 0 || cbwBuffer > MAX_CBW_BUFFER)) {
            throw QmpError.generic("cbw-buffer-size must be between 0 and " + MAX_CBW_BUFFER);
        }
        // sync=none is fleecing: a reader of the target (or of its snapshot) reads what is not
        // copied from the source, so old data must be on the target before the guest write goes on
        boolean fleecing = c.sync() == MirrorSyncMode.NONE || BackupGraph.readsThrough(target, source);
        if (fleecing && cbwBuffer != null && cbwBuffer > 0) {
            throw QmpError.generic("cbw-buffer-size needs a target that does not read through to the source "
                    + "(sync=none, or the source in the target's backing chain): its copy-before-write "
                    + "writes the target before the guest write");
        }
        if (cbwBuffer != null && cbwBuffer > 0 && cbwBuffer < cluster) {
            // it would hold no cluster at all: refused rather than silently off (as max-chunk is)
            throw QmpError.generic("cbw-buffer-size (" + cbwBuffer + ") is less than backup cluster size ("
                    + cluster + "); 0 turns the buffer off");
        }
        long saveBytes = fleecing ? 0 : cbwBuffer != null ? cbwBuffer : DEFAULT_CBW_BUFFER;
        if (c.xPerf() != null) {
            Long mw = c.xPerf().maxWorkers();
            if (mw != null) {
                if (mw < 1 || mw > Integer.MAX_VALUE) {
                    throw QmpError.generic("max-workers must be between 1 and 2147483647");
                }
                workers = (int) Math.min(MAX_WORKERS, mw);
            }
            Long mc = c.xPerf().maxChunk();
            if (mc != null && mc != 0) {
                if (mc < cluster) {
                    throw QmpError.generic("Required max-chunk (" + mc + ") is less than backup cluster size ("
                            + cluster + ")");
                }
                chunk = (int) Math.min(BlockCopy.MAX_CHUNK, mc);
            }
        }
        if (c.compress()) {
            // QEMU backup_job_create(): the target driver must support compressed writes. raw never
            // does (QEMU's text, trailing space included); jblockd's qcow2 has no compressed
            // writer yet.
            if ("qcow2".equals(target.driver().formatName())) {
                throw QmpError.generic("Compressed writes to qcow2 are not implemented in jblockd");
            }
            throw QmpError.generic("Compression is not supported for this drive ");
        }
        String id = c.jobId() != null ? c.jobId() : deviceName(source).orElse("");
        boolean copiesBitmap = c.sync() == MirrorSyncMode.BITMAP || c.sync() == MirrorSyncMode.INCREMENTAL;
        if (copiesBitmap && c.bitmap() == null) {
            throw QmpError.generic("must provide a valid bitmap name for '" + c.sync().wire() + "' sync mode");
        }
        SyncBitmap syncBitmap = null;
        if (c.bitmap() != null) {
            try {
                // backup_job_create(): a bitmap the job will write must be writable; then it is
                // frozen, here inside the drain that fixes the job's point in time
                if (c.bitmapMode() != BitmapSyncMode.NEVER) {
                    c.bitmap().check(BlockDirtyBitmap.Check.DEFAULT);
                }
                syncBitmap = SyncBitmap.freeze(c.bitmap(), c.bitmapMode());
            } catch (BitmapException e) {
                throw QmpError.generic(e.getMessage());
            }
        }
        BlockCopy copy = new BlockCopy(source, target, len, cluster, chunk, workers, fresh, saveBytes);
        if (copiesBitmap) {
            copy.restrictTo(c.bitmap().bits());
        }
        BackupGraph bg;
        try {
            bg = BackupGraph.prepare(graph, devices, source, copy, c.filterNodeName(), target, ownsTarget);
        } catch (IoError e) {
            unfreeze(syncBitmap, copy);
            throw QmpError.generic(e.getMessage());
        }
        BackupJob driver = new BackupJob(copy, source, c.sync(),
                c.onSourceError() == null ? BlockdevOnError.REPORT : c.onSourceError(),
                c.onTargetError() == null ? BlockdevOnError.REPORT : c.onTargetError(), workers, bg, syncBitmap);
        Job created;
        try {
            List<JobUse> uses = backupUses(bg.filter(), source, target);
            created = txn == null
                    ? jobs.create(id, driver, uses, c.speed(), c.autoFinalize(), c.autoDismiss())
                    : jobs.create(id, driver, uses, c.speed(), c.autoFinalize(), c.autoDismiss(), txn);
        } catch (QmpError | RuntimeException e) {
            graph.unregister(bg.filter());
            unfreeze(syncBitmap, copy);
            throw e;
        }
        // incremental/bitmap: the bytes of the clusters the bitmap names (QEMU's copy bitmap count)
        created.context().setLen(copiesBitmap ? copy.dirtyBytes() : len);
        copy.onProgress(created.context()::addOffset);
        bg.attach(jobs, created);
        // The filter goes in now, while the transaction drains the source: every guest write
        // after the transaction passes it, whichever action of the transaction comes first.
        bg.activate();
        return created;
    }

    /**
     * backup_job_create(): the job's main node is the copy-before-write filter and it keeps the
     * target, needing nothing itself on either (the filter's links to source and target carry
     * the permissions); it keeps the source too, so that no second job starts on it.
     */
    private static List<JobUse> backupUses(BlockNode filter, BlockNode source, BlockNode target) {
        return List.of(JobUse.node(filter, "main node", Access.PASSIVE),
                JobUse.node(source, "source", Access.PASSIVE),
                JobUse.node(target, "target", Access.PASSIVE));
    }

    /**
     * Target creation per reference/backup.md §3: full → no backing; top → the source's backing
     * file (full path and format); none → the source image itself.
     */
    private void createTarget(Path path, String format, BlockNode source, MirrorSyncMode sync, BlockNode backing)
            throws QmpError {
        ImageCreator creator = graph.drivers().creator(format)
                .orElseThrow(() -> QmpError.generic("Unknown file format '" + format + "'"));
        Path parent = path.toAbsolutePath().getParent();
        if (parent != null && !Files.isDirectory(parent)) {
            throw QmpError.generic("Could not create '" + path + "': No such file or directory");
        }
        String backingFile = null;
        String backingFormat = null;
        if (sync == MirrorSyncMode.TOP && backing != null) {
            backingFile = backing.driver().filename();
            backingFormat = backing.driver().formatName();
        } else if (sync == MirrorSyncMode.NONE) {
            backingFile = source.driver().filename();
            backingFormat = source.driver().formatName();
        }
        if (backingFile != null && "raw".equals(format)) {
            // raw has no backing file: the target gets no backing link (the data is still
            // correct for sync=top only if the base reads as zero; QEMU behaves the same).
            backingFile = null;
            backingFormat = null;
        }
        try {
            creator.create(new ImageCreator.Options(path, source.length(), backingFile, backingFormat, 0, false));
        } catch (IOException e) {
            throw QmpError.generic("Could not create '" + path + "': " + IoError.wrap(e).errno().strerror());
        }
    }

    private static String openError(String path, IOException e) {
        IoError io = IoError.wrap(e);
        String msg = io.getMessage();
        if (msg != null && !msg.isEmpty()) {
            return msg;
        }
        return "Could not open '" + path + "': " + io.errno().strerror();
    }

    private void closeQuietly(BlockNode node) {
        try {
            graph.remove(node);
        } catch (IOException ignored) {
            // the first error is the one to report
        }
    }

    /** A backup's {@code bitmap} on its source and the bitmap-mode it applies. */
    private record BitmapArgs(BlockDirtyBitmap bitmap, BitmapSyncMode mode) {
    }

    /**
     * do_backup_common()'s bitmap checks in QEMU 7.2's order: incremental implies (and only
     * allows) on-success; the bitmap is looked up on the source node only; a bitmap needs a
     * mode; it must not be busy or inconsistent (read-only is checked later, when the mode will
     * write it); sync=none and mode never (except sync=bitmap) make no sense with one; a mode
     * needs a bitmap. "must provide a valid bitmap name" comes later (backup_job_create).
     */
    private static BitmapArgs bitmapArgs(BlockNode source, MirrorSyncMode sync, String bitmap, String bitmapMode)
            throws QmpError {
        BitmapSyncMode mode = bitmapMode == null ? null : BitmapSyncMode.fromWire(bitmapMode);
        if (sync == MirrorSyncMode.INCREMENTAL) {
            if (mode != null && mode != BitmapSyncMode.ON_SUCCESS) {
                throw QmpError.generic("Bitmap sync mode must be 'on-success' when using sync mode 'incremental'");
            }
            mode = BitmapSyncMode.ON_SUCCESS;
        }
        BlockDirtyBitmap b = null;
        if (bitmap != null) {
            b = source.bitmaps().find(bitmap).orElseThrow(() ->
                    QmpError.generic("Bitmap '" + bitmap + "' could not be found"));
            if (mode == null) {
                throw QmpError.generic("Bitmap sync mode must be given when providing a bitmap");
            }
            try {
                b.check(BlockDirtyBitmap.Check.ALLOW_RO);
            } catch (BitmapException e) {
                throw QmpError.generic(e.getMessage());
            }
            if (sync == MirrorSyncMode.NONE) {
                throw QmpError.generic("sync mode 'none' does not produce meaningful bitmap outputs");
            }
            if (mode == BitmapSyncMode.NEVER && sync != MirrorSyncMode.BITMAP) {
                throw QmpError.generic("Bitmap sync mode 'never' has no meaningful effect when combined with sync mode '"
                        + sync.wire() + "'");
            }
        } else if (bitmapMode != null) {
            throw QmpError.generic("Cannot specify bitmap sync mode without a bitmap");
        }
        return new BitmapArgs(b, mode);
    }

    /** Undoes {@link SyncBitmap#freeze} for a job that was never made (a failed prepare). */
    private static void unfreeze(SyncBitmap syncBitmap, BlockCopy copy) {
        if (syncBitmap != null) {
            syncBitmap.release();
        }
    }

    /**
     * seed 004: an unknown device is DeviceNotFound (QEMU 7.2 says GenericError); the same in a
     * transaction, since the action is the command.
     */
    private BlockNode lookupSource(String device) throws QmpError {
        return devices.lookupNode(device).orElseThrow(() -> new QmpError(ErrorClass.DEVICE_NOT_FOUND,
                "Cannot find device='" + device + "' nor node-name='" + device + "'"));
    }

    private Optional<String> deviceName(BlockNode node) {
        return devices.deviceOf(node).map(Device::name);
    }

    /** The name QEMU's busy message shows: the drive name, else the node name. */
    private String displayName(BlockNode node) {
        return deviceName(node).orElse(node.nodeName());
    }
}
