package jblockd.commands;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;

import jblockd.block.Access;
import jblockd.block.BlockNode;
import jblockd.block.IoError;
import jblockd.block.NodeGraph;
import jblockd.block.Perm;
import jblockd.block.bitmap.BlockDirtyBitmap;
import jblockd.block.bitmap.DirtyBitmap;
import jblockd.device.Device;
import jblockd.device.DrainedSection;
import jblockd.device.Devices;
import jblockd.job.Job;
import jblockd.job.JobRegistry;
import jblockd.job.JobUse;
import jblockd.job.mirror.Chain;
import jblockd.job.mirror.JobTopFilter;
import jblockd.job.mirror.MirrorJob;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.JobType;
import jblockd.qapi.MirrorSyncMode;
import jblockd.qapi.NewImageMode;
import jblockd.qapi.QmpError;
import jblockd.qmp.CommandGroup;
import jblockd.qmp.CommandRegistry;

/**
 * drive-mirror and blockdev-mirror (QEMU 7.2 blockdev.c qmp_drive_mirror(),
 * blockdev_mirror_common(), block/mirror.c mirror_start_job()), with their checks in QEMU's
 * order and texts (reference/mirror-stream-commit.md §1). The job is a {@link MirrorJob}; this
 * class builds the graph around it: a {@link JobTopFilter} becomes the device's root so guest
 * writes are tracked, and the end of the job pivots or restores the root.
 */
public final class MirrorCommands implements CommandGroup {

    public record DriveMirrorArgs(String jobId, String device, String target, String format,
                                  String nodeName, String replaces, MirrorSyncMode sync,
                                  NewImageMode mode, Long speed, Long granularity, Long bufSize,
                                  BlockdevOnError onSourceError, BlockdevOnError onTargetError,
                                  Boolean unmap, String copyMode, Boolean autoFinalize,
                                  Boolean autoDismiss) {
    }

    public record BlockdevMirrorArgs(String jobId, String device, String target, String replaces,
                                     MirrorSyncMode sync, Long speed, Long granularity, Long bufSize,
                                     BlockdevOnError onSourceError, BlockdevOnError onTargetError,
                                     String filterNodeName, String copyMode, Boolean autoFinalize,
                                     Boolean autoDismiss) {
    }

    /** Everything mirror_start_job() needs, after the command-specific parts. */
    record Common(String jobId, BlockNode source, BlockNode target, boolean targetOwned,
                  String replaces, MirrorSyncMode sync, Long speed, Long granularity, Long bufSize,
                  BlockdevOnError onSourceError, BlockdevOnError onTargetError, boolean unmap,
                  String filterNodeName, String copyMode, Boolean autoFinalize, Boolean autoDismiss) {
    }

    private final JobNodes nodes;
    private final JobRegistry jobs;

    public MirrorCommands(NodeGraph graph, Devices devices, JobRegistry jobs) {
        this.nodes = new JobNodes(graph, devices, jobs);
        this.jobs = jobs;
    }

    @Override
    public void register(CommandRegistry r) {
        r.register("drive-mirror", DriveMirrorArgs.class, a -> {
            driveMirror(a);
            return null;
        });
        r.register("blockdev-mirror", BlockdevMirrorArgs.class, a -> {
            blockdevMirror(a);
            return null;
        });
    }

    /** qmp_drive_mirror(). */
    public Job driveMirror(DriveMirrorArgs a) throws QmpError {
        BlockNode bs = nodes.rootNode(a.device());
        NewImageMode mode = a.mode() == null ? NewImageMode.ABSOLUTE_PATHS : a.mode();
        String format = a.format() != null ? a.format()
                : mode == NewImageMode.EXISTING ? null : bs.driver().formatName();
        if (a.replaces() != null && a.nodeName() == null) {
            throw QmpError.generic("a node-name must be provided when replacing a named node of the graph");
        }
        long size = length(bs);
        MirrorSyncMode sync = a.sync();
        BlockNode backing = bs.driver().backing();
        if (backing == null && sync == MirrorSyncMode.TOP) {
            sync = MirrorSyncMode.FULL;
        }
        BlockNode targetBacking = sync == MirrorSyncMode.NONE ? bs : backing;
        String backingFile = null;
        String backingFormat = null;
        if (sync != MirrorSyncMode.FULL && targetBacking != null && mode == NewImageMode.ABSOLUTE_PATHS) {
            backingFile = targetBacking.driver().filename();
            backingFormat = targetBacking.driver().formatName();
        }
        BlockNode target = nodes.openNewTarget(a.target(), format, mode, size, backingFile, backingFormat,
                a.nodeName(), bs.unmap());
        try {
            return start(new Common(a.jobId(), bs, target, true, a.replaces(), sync, a.speed(),
                    a.granularity(), a.bufSize(), a.onSourceError(), a.onTargetError(),
                    a.unmap() == null || a.unmap(), null, a.copyMode(), a.autoFinalize(), a.autoDismiss()));
        } catch (QmpError | RuntimeException e) {
            try {
                nodes.graph().remove(target);
            } catch (IOException ignored) {
                // the command already fails
            }
            throw e;
        }
    }

    /** qmp_blockdev_mirror(). */
    public Job blockdevMirror(BlockdevMirrorArgs a) throws QmpError {
        BlockNode bs = nodes.rootNode(a.device());
        BlockNode target = nodes.graph().node(a.target()).orElseThrow(() ->
                QmpError.generic("Cannot find device='" + a.target() + "' nor node-name='" + a.target() + "'"));
        return start(new Common(a.jobId(), bs, target, false, a.replaces(), a.sync(), a.speed(),
                a.granularity(), a.bufSize(), a.onSourceError(), a.onTargetError(), true,
                a.filterNodeName(), a.copyMode(), a.autoFinalize(), a.autoDismiss()));
    }

    /** blockdev_mirror_common() + mirror_start() + mirror_start_job(). */
    Job start(Common c) throws QmpError {
        long granularity = c.granularity() == null ? 0 : c.granularity();
        if (granularity != 0 && (granularity < 512 || granularity > 64L * 1048576)) {
            throw QmpError.generic("Parameter 'granularity' expects a value in range [512B, 64MB]");
        }
        if ((granularity & (granularity - 1)) != 0) {
            throw QmpError.generic("Parameter 'granularity' expects a power of 2");
        }
        BlockNode bs = c.source();
        jobs.checkNotBusy(bs, nodes.displayName(bs));
        jobs.checkNotBusy(c.target(), nodes.displayName(c.target()));
        MirrorSyncMode sync = c.sync();
        if (bs.driver().backing() == null && sync == MirrorSyncMode.TOP) {
            sync = MirrorSyncMode.FULL;
        }
        if (c.replaces() != null) {
            BlockNode toReplace = nodes.graph().node(c.replaces()).orElseThrow(() ->
                    QmpError.generic("Failed to find node with node-name='" + c.replaces() + "'"));
            if (toReplace != bs) {
                // QEMU can replace a node further down (a quorum child); jblockd pivots the root only.
                throw QmpError.generic("Cannot replace node '" + c.replaces()
                        + "': only the mirrored root node can be replaced");
            }
        }
        if (sync == MirrorSyncMode.INCREMENTAL || sync == MirrorSyncMode.BITMAP) {
            throw QmpError.generic("Sync mode '" + sync.wire() + "' not supported");
        }
        // the schema admits only MirrorCopyMode's two values
        boolean writeBlocking = "write-blocking".equals(c.copyMode());
        if (granularity == 0) {
            granularity = defaultGranularity(c.target());
        }
        long bufSize = c.bufSize() == null ? 0 : c.bufSize();
        if (bufSize < 0) {
            throw QmpError.generic("Invalid parameter 'buf-size'");
        }
        if (bufSize == 0) {
            bufSize = MirrorJob.DEFAULT_BUF_SIZE;
        }
        bufSize = Math.max(bufSize, granularity);
        if (bs == c.target()) {
            throw QmpError.generic("Can't mirror node into itself");
        }
        MirrorSyncMode fsync = sync;
        return startMirror(JobType.MIRROR, nodes.defaultJobId(c.jobId(), bs), bs, c.target(),
                fsync == MirrorSyncMode.TOP ? bs.driver().backing() : null, fsync, (int) granularity, bufSize,
                orReport(c.onSourceError()), orReport(c.onTargetError()), c.unmap(), c.filterNodeName(),
                c.speed(), c.autoFinalize(), c.autoDismiss(), c.targetOwned(), writeBlocking, null);
    }

    /**
     * Starts a mirror-like job (mirror or active commit) from the root {@code bs} of a device
     * into {@code target}. {@code extraRelease} runs when the job is gone, with whether it
     * pivoted (active commit drops the committed chain or the base writer). {@code writeBlocking}:
     * copy-mode=write-blocking (QEMU's active commit always copies in the background).
     */
    Job startMirror(JobType type, String jobId, BlockNode bs, BlockNode target, BlockNode base,
                    MirrorSyncMode sync, int granularity, long bufSize, BlockdevOnError onSource,
                    BlockdevOnError onTarget, boolean unmap, String filterNodeName, Long speed,
                    Boolean autoFinalize, Boolean autoDismiss, boolean targetOwned, boolean writeBlocking,
                    java.util.function.BiConsumer<Job, Boolean> extraRelease) throws QmpError {
        long size = length(bs);
        if (type == JobType.MIRROR) {
            long targetSize = length(target);
            if (targetSize != size && !target.capabilities().growable()) {
                throw QmpError.generic("Source and target image have different sizes");
            }
        }
        if (filterNodeName != null && nodes.graph().node(filterNodeName).isPresent()) {
            throw QmpError.generic("Duplicate nodes with node-name='" + filterNodeName + "'");
        }
        DirtyBitmap bitmap = new DirtyBitmap(size, granularity);
        // QEMU 7.2's active commit runs on mirror.c (commit_active_start -> mirror_start_job), so
        // its filter is a mirror_top too (observed in query-named-block-nodes); commit_top is the
        // filter of the non-active commit only
        // The bitmap records at the source node itself, not in the filter: every write that
        // reaches the source is seen, also one from a user that does not go through the
        // filter (an export added on the node name later, another parent node).
        JobTopFilter filter = new JobTopFilter("mirror_top", bs, null);
        BlockNode filterNode = nodes.filterNode(filter, filterNodeName);
        Job[] self = new Job[1];
        Actions actions = new Actions(bs, target, filterNode, targetOwned, self, extraRelease,
                bs.bitmaps().adopt(bitmap));
        try {
            MirrorJob driver = new MirrorJob(new MirrorJob.Params(type, sync, base, bufSize, onSource, onTarget,
                    unmap, writeBlocking), bs, target, filter, bitmap, actions);
            Job job = nodes.createJob(jobId, driver, mirrorUses(bs, target, type == JobType.COMMIT ? base : null,
                    size), speed, autoFinalize, autoDismiss);
            self[0] = job;
            // bdrv_append(mirror_top_bs, bs): the devices move onto the filter. The job reads
            // through the filter and lets the guest write, but nobody may resize the source.
            nodes.insertFilter(job, filterNode, Access.of(Perm.of(Perm.CONSISTENT_READ),
                    Perm.of(Perm.CONSISTENT_READ, Perm.WRITE_UNCHANGED, Perm.WRITE)));
            jobs.start(job);
            return job;
        } catch (QmpError | RuntimeException e) {
            actions.untrack();
            throw e;
        }
    }

    /**
     * mirror_start_job(): the job keeps the source (written by the guest, never resized) and
     * the target, whose own backend writes it (and grows it when smaller) while nobody else may
     * read or write it, the target being inconsistent until the job is done. An active commit's
     * target is in the source's backing chain, so its users may go on reading and writing
     * through the chain; the layers between the source and {@code commitBase} (an active
     * commit's base, else null) keep being read by the source and are kept by the job too, as
     * they leave the chain.
     */
    private static List<JobUse> mirrorUses(BlockNode bs, BlockNode target, BlockNode commitBase, long size)
            throws QmpError {
        boolean inChain = Chain.contains(bs, target);
        Set<Perm> targetNeeds = Perm.of(Perm.WRITE);
        if (length(target) < size) {
            targetNeeds.add(Perm.RESIZE);
        }
        Set<Perm> targetShares = inChain ? Perm.of(Perm.WRITE_UNCHANGED, Perm.CONSISTENT_READ, Perm.WRITE)
                : Perm.of(Perm.WRITE_UNCHANGED);
        Set<Perm> guestMayWrite = Perm.of(Perm.CONSISTENT_READ, Perm.WRITE_UNCHANGED, Perm.WRITE);
        List<JobUse> uses = new ArrayList<>();
        uses.add(JobUse.node(bs, "source", Access.of(Perm.none(), guestMayWrite)));
        uses.add(JobUse.backend(target, Access.of(targetNeeds, targetShares)));
        uses.add(JobUse.node(target, "target", Access.PASSIVE));
        if (commitBase != null) {
            for (BlockNode n = bs.driver().backing(); n != null && n != commitBase; n = n.driver().backing()) {
                uses.add(JobUse.node(n, "intermediate node", Access.of(Perm.none(), guestMayWrite)));
            }
        }
        return uses;
    }

    /** bdrv_get_default_bitmap_granularity(): the target's cluster size in [4 KiB, 64 KiB]. */
    static int defaultGranularity(BlockNode target) {
        int cluster = target.driver().clusterSize();
        if (cluster <= 0) {
            return 64 * 1024;
        }
        return Math.max(4096, Math.min(64 * 1024, cluster));
    }

    static BlockdevOnError orReport(BlockdevOnError e) {
        return e == null ? BlockdevOnError.REPORT : e;
    }

    static long length(BlockNode n) throws QmpError {
        try {
            return n.length();
        } catch (IOException e) {
            throw QmpError.generic("bdrv_getlength failed: " + IoError.wrap(e).errno().strerror());
        }
    }

    /** The graph side of a mirror's end: pivot, detach, release. */
    private final class Actions implements MirrorJob.GraphActions {
        private final BlockNode source;
        private final BlockNode target;
        private final BlockNode filterNode;
        private final boolean targetOwned;
        private final Job[] job;
        private final java.util.function.BiConsumer<Job, Boolean> extraRelease;
        private boolean detached;
        /** The job's bitmap, recording at the source node until the job ends. */
        private final BlockDirtyBitmap tracking;
        private boolean untracked;

        Actions(BlockNode source, BlockNode target, BlockNode filterNode, boolean targetOwned,
                Job[] job, java.util.function.BiConsumer<Job, Boolean> extraRelease, BlockDirtyBitmap tracking) {
            this.source = source;
            this.target = target;
            this.filterNode = filterNode;
            this.targetOwned = targetOwned;
            this.job = job;
            this.extraRelease = extraRelease;
            this.tracking = tracking;
        }

        /**
         * Every device that reaches the source: those on the filter and any other user that
         * writes the source directly (an export on its node name).
         */
        @Override
        public DrainedSection drain() {
            return nodes.devices().drain(source);
        }

        /** The source stops recording for the job. Idempotent. */
        synchronized void untrack() {
            if (!untracked) {
                untracked = true;
                source.bitmaps().release(tracking);
            }
        }

        @Override
        public void pivot() {
            removeFilterOnce(target);
        }

        @Override
        public void detach() {
            removeFilterOnce(source);
        }

        /** Pivot and detach both end the filter; whichever comes first decides where devices go. */
        private synchronized void removeFilterOnce(BlockNode to) {
            if (detached) {
                return;
            }
            nodes.removeFilter(filterNode, to);
            // only once the devices moved: a pivot that failed half-way can still be detached
            detached = true;
        }

        @Override
        public void release(boolean pivoted) {
            untrack();
            Job j = job[0];
            if (j == null) {
                return;
            }
            nodes.releaseAfterJob(j, pivoted, source, targetOwned ? target : null);
            if (extraRelease != null) {
                extraRelease.accept(j, pivoted);
            }
        }
    }
}
