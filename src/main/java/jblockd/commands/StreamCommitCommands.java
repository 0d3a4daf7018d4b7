package jblockd.commands;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;

import jblockd.block.Access;
import jblockd.block.BlockNode;
import jblockd.block.IoError;
import jblockd.block.NodeGraph;
import jblockd.block.Perm;
import jblockd.device.Device;
import jblockd.device.DrainedSection;
import jblockd.device.Devices;
import jblockd.job.Job;
import jblockd.job.JobRegistry;
import jblockd.job.JobUse;
import jblockd.job.commit.CommitJob;
import jblockd.job.mirror.Chain;
import jblockd.job.mirror.JobTopFilter;
import jblockd.job.mirror.RangeLocks;
import jblockd.job.stream.StreamJob;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.ErrorClass;
import jblockd.qapi.JobType;
import jblockd.qapi.MirrorSyncMode;
import jblockd.qapi.QmpError;
import jblockd.qmp.CommandGroup;
import jblockd.qmp.CommandRegistry;

/**
 * block-stream and block-commit (QEMU 7.2 blockdev.c qmp_block_stream(), qmp_block_commit()),
 * checks in QEMU's order with its texts (reference/mirror-stream-commit.md §2, §3). Intermediate
 * commit is a {@link CommitJob}; committing the active layer is a mirror job of type
 * {@code commit} built by {@link MirrorCommands#startMirror}.
 */
public final class StreamCommitCommands implements CommandGroup {

    public record BlockStreamArgs(String jobId, String device, String base, String baseNode, String backingFile,
                                  String bottom, Long speed, BlockdevOnError onError, String filterNodeName,
                                  Boolean autoFinalize, Boolean autoDismiss) {
    }

    public record BlockCommitArgs(String jobId, String device, String baseNode, String base, String topNode,
                                  String top, String backingFile, Long speed, BlockdevOnError onError,
                                  String filterNodeName, Boolean autoFinalize, Boolean autoDismiss) {
    }

    private final JobNodes nodes;
    private final JobRegistry jobs;
    private final MirrorCommands mirror;
    private final ReopenCommands reopen;

    public StreamCommitCommands(NodeGraph graph, Devices devices, JobRegistry jobs) {
        this.nodes = new JobNodes(graph, devices, jobs);
        this.jobs = jobs;
        this.mirror = new MirrorCommands(graph, devices, jobs);
        this.reopen = new ReopenCommands(graph, devices);
    }

    @Override
    public void register(CommandRegistry r) {
        r.register("block-stream", BlockStreamArgs.class, a -> {
            blockStream(a);
            return null;
        });
        r.register("block-commit", BlockCommitArgs.class, a -> {
            blockCommit(a);
            return null;
        });
    }

    /**
     * bdrv_find_backing_image(): a layer below {@code top} whose file name is {@code name}
     * (as given, or as an absolute path).
     */
    static BlockNode findBackingImage(BlockNode top, String name) {
        String abs = Path.of(name).toAbsolutePath().normalize().toString();
        for (BlockNode n = top.driver().backing(); n != null; n = n.driver().backing()) {
            String f = n.driver().filename();
            if (f.equals(name) || Path.of(f).toAbsolutePath().normalize().toString().equals(abs)) {
                return n;
            }
        }
        return null;
    }

    // ------------------------------------------------------------------ block-stream

    public Job blockStream(BlockStreamArgs a) throws QmpError {
        if (a.base() != null && a.baseNode() != null) {
            throw QmpError.generic("'base' and 'base-node' cannot be specified at the same time");
        }
        if (a.base() != null && a.bottom() != null) {
            throw QmpError.generic("'base' and 'bottom' cannot be specified at the same time");
        }
        if (a.bottom() != null && a.baseNode() != null) {
            throw QmpError.generic("'bottom' and 'base-node' cannot be specified at the same time");
        }
        BlockdevOnError onError = MirrorCommands.orReport(a.onError());
        BlockNode bs = nodes.lookup(a.device());
        BlockNode base = null;
        if (a.base() != null) {
            base = findBackingImage(bs, a.base());
            if (base == null) {
                throw QmpError.generic("Can't find '" + a.base() + "' in the backing chain");
            }
        }
        if (a.baseNode() != null) {
            base = nodes.namedNode(a.baseNode());
            if (base == bs || !Chain.contains(bs, base)) {
                throw QmpError.generic("Node '" + a.baseNode() + "' is not a backing image of '" + a.device() + "'");
            }
        }
        if (a.bottom() != null) {
            BlockNode bottom = nodes.namedNode(a.bottom());
            if (bottom == bs || !Chain.contains(bs, bottom)) {
                throw QmpError.generic("Node '" + a.bottom() + "' is not in a chain starting from '"
                        + a.device() + "'");
            }
            base = bottom.driver().backing();
        }
        List<BlockNode> layers = Chain.layers(bs, base);
        for (BlockNode n : layers) {
            jobs.checkNotBusy(n, nodes.displayName(n));
        }
        if (base == null && a.backingFile() != null) {
            throw QmpError.generic("backing file specified, but streaming the entire chain");
        }
        if (bs.readOnly()) {
            throw QmpError.generic("Block node is read-only");
        }
        String backingName = base == null ? null : a.backingFile() != null ? a.backingFile() : base.driver().filename();
        String backingFmt = base == null ? null : base.driver().formatName();
        final BlockNode fbase = base;
        RangeLocks locks = new RangeLocks(StreamJob.CHUNK);
        BlockNode filterNode = nodes.filterNode(new JobTopFilter("copy-on-read", bs, locks),
                a.filterNodeName());
        BlockNode oldBacking = bs.driver().backing();
        Job[] self = new Job[1];
        StreamJob driver = new StreamJob(bs, base, onError, locks, new StreamJob.GraphActions() {
            @Override
            public void rebase() throws Exception {
                // stream_prepare(): the top's header names base (or no backing file at all);
                // an image without a backing file is left alone
                if (bs.driver().backing() != null) {
                    try (DrainedSection s = nodes.devices().drain(bs)) {
                        bs.driver().setBacking(fbase, backingName, backingFmt);
                    }
                }
            }

            @Override
            public void release(boolean rebased) {
                nodes.removeFilter(filterNode, bs);
                if (rebased && oldBacking != null && oldBacking != fbase && self[0] != null) {
                    nodes.removeWhenGone(self[0], oldBacking);
                }
            }
        });
        Job job = nodes.createJob(nodes.defaultJobId(a.jobId(), bs), driver, streamUses(layers), a.speed(),
                a.autoFinalize(), a.autoDismiss());
        self[0] = job;
        nodes.insertFilter(job, filterNode, Access.PASSIVE);
        jobs.start(job);
        return job;
    }

    /**
     * stream_start(): the active node may be written (the guest) but not resized (the length is
     * read once); the layers below it up to base are read once each and will leave the chain,
     * so nobody may write or resize them meanwhile.
     */
    private static List<JobUse> streamUses(List<BlockNode> layers) {
        Set<Perm> basic = Perm.of(Perm.CONSISTENT_READ, Perm.WRITE_UNCHANGED);
        List<JobUse> uses = new ArrayList<>();
        uses.add(JobUse.node(layers.getFirst(), "active node",
                Access.of(Perm.none(), Perm.of(Perm.CONSISTENT_READ, Perm.WRITE_UNCHANGED, Perm.WRITE))));
        for (BlockNode n : layers.subList(1, layers.size())) {
            uses.add(JobUse.node(n, "intermediate node", Access.of(Perm.none(), basic)));
        }
        return uses;
    }

    // ------------------------------------------------------------------ block-commit

    public Job blockCommit(BlockCommitArgs a) throws QmpError {
        BlockdevOnError onError = MirrorCommands.orReport(a.onError());
        BlockNode bs;
        // libvirt probes with DeviceNotFound, so the lookup comes first (blockdev.c comment).
        BlockNode any = nodes.devices().lookupNode(a.device()).orElseThrow(() ->
                new QmpError(ErrorClass.DEVICE_NOT_FOUND, "Device '" + a.device() + "' not found"));
        if (!nodes.isRoot(any)) {
            throw QmpError.generic("Need a root block node");
        }
        bs = any;
        jobs.checkNotBusy(bs, nodes.displayName(bs));
        BlockNode top = bs;
        if (a.topNode() != null && a.top() != null) {
            throw QmpError.generic("'top-node' and 'top' are mutually exclusive");
        } else if (a.topNode() != null) {
            top = namedInChain(a.topNode(), bs);
        } else if (a.top() != null) {
            if (!bs.driver().filename().equals(a.top())) {
                top = findBackingImage(bs, a.top());
            }
        }
        if (top == null) {
            throw QmpError.generic("Top image file " + (a.top() != null ? a.top() : "NULL") + " not found");
        }
        BlockNode base;
        if (a.baseNode() != null && a.base() != null) {
            throw QmpError.generic("'base-node' and 'base' are mutually exclusive");
        } else if (a.baseNode() != null) {
            base = namedInChain(a.baseNode(), top);
        } else if (a.base() != null) {
            base = findBackingImage(top, a.base());
            if (base == null) {
                throw QmpError.generic("Can't find '" + a.base() + "' in the backing chain");
            }
        } else {
            base = top;
            while (base.driver().backing() != null) {
                base = base.driver().backing();
            }
        }
        List<BlockNode> layers = Chain.layers(top, base);
        for (BlockNode n : layers) {
            jobs.checkNotBusy(n, nodes.displayName(n));
        }
        if (top == base) {
            throw QmpError.generic("cannot commit an image into itself");
        }
        if (top == bs && a.backingFile() != null) {
            throw QmpError.generic("'backing-file' specified, but 'top' is the active layer");
        }
        String jobId = nodes.defaultJobId(a.jobId(), bs);
        // commit_start() / commit_active_start(): a read-only base is reopened read-write for
        // the job, so the base node itself is written and every reader of it sees the data
        boolean baseWasReadOnly = base.readOnly();
        reopen.setReadOnly(base, false);
        try {
            if (top == bs) {
                return activeCommit(a, jobId, bs, base, onError);
            }
            return intermediateCommit(a, jobId, bs, top, base, baseWasReadOnly, layers, onError);
        } catch (QmpError | RuntimeException e) {
            if (baseWasReadOnly) {
                reopen.makeReadOnlyQuietly(base);
            }
            throw e;
        }
    }

    /** block-commit's top-node / base-node: a node name whose node is in {@code chainTop}'s chain. */
    private BlockNode namedInChain(String nodeName, BlockNode chainTop) throws QmpError {
        BlockNode n = nodes.namedNode(nodeName);
        if (!Chain.contains(chainTop, n)) {
            throw QmpError.generic("'" + nodeName + "' is not in this backing file chain");
        }
        return n;
    }

    /**
     * commit_start(): the job keeps the active node ({@code bs}) and the overlay whose backing
     * link it rewrites; the committed layers may be written (the job empties them into base) but
     * not resized, and nobody may read them as a consistent image (their content is on its way
     * into base; the overlay reads through commit_top, which claims nothing on top), except
     * filters directly over base; the job's own backends read {@code top} (taking nothing) and
     * write the base (resizing it only when it is smaller than top, as QEMU asks for RESIZE then
     * only, so a read-only NBD export of the base, which unshares resize, does not stop the
     * commit), which nobody else may write or resize meanwhile.
     */
    private static List<JobUse> commitUses(BlockNode bs, BlockNode overlay, BlockNode top, List<BlockNode> layers,
                                           BlockNode base) throws QmpError {
        Set<Perm> baseNeeds = Perm.of(Perm.CONSISTENT_READ, Perm.WRITE);
        if (MirrorCommands.length(base) < MirrorCommands.length(top)) {
            baseNeeds.add(Perm.RESIZE);
        }
        Access baseBackend = Access.of(baseNeeds, Perm.of(Perm.CONSISTENT_READ, Perm.WRITE_UNCHANGED));
        List<JobUse> uses = new ArrayList<>();
        uses.add(JobUse.node(bs, "main node", Access.PASSIVE));
        // filtered_base: from the last layer that is not a filter on, only filters over base
        int filtersOverBase = layers.size();
        while (filtersOverBase > 0 && layers.get(filtersOverBase - 1).driver().filtered() != null) {
            filtersOverBase--;
        }
        for (int i = 0; i < layers.size(); i++) {
            Set<Perm> shared = Perm.of(Perm.WRITE, Perm.WRITE_UNCHANGED);
            if (i >= filtersOverBase) {
                shared.add(Perm.CONSISTENT_READ);
            }
            uses.add(JobUse.node(layers.get(i), "intermediate node", Access.of(Perm.none(), shared)));
        }
        if (overlay != bs) {
            uses.add(JobUse.node(overlay, "overlay of top", Access.PASSIVE));
        }
        uses.add(JobUse.backend(layers.getFirst(), Access.PASSIVE));
        uses.add(JobUse.backend(base, baseBackend));
        return uses;
    }

    /**
     * The active commit is a mirror into the base. The base stays writable afterwards whatever
     * the outcome, as QSD 7.2 leaves it (after a pivot it takes the replaced top's place).
     */
    private Job activeCommit(BlockCommitArgs a, String jobId, BlockNode bs, BlockNode base,
                             BlockdevOnError onError) throws QmpError {
        int granularity = MirrorCommands.defaultGranularity(base);
        return mirror.startMirror(JobType.COMMIT, jobId, bs, base, base, MirrorSyncMode.TOP, granularity,
                jblockd.job.mirror.MirrorJob.DEFAULT_BUF_SIZE, onError, onError, true, a.filterNodeName(),
                a.speed(), a.autoFinalize(), a.autoDismiss(), false, false, (job, pivoted) ->
                        // the mirror releases the replaced chain itself
                        nodes.releaseAfterJob(job, pivoted, null, null));
    }

    private Job intermediateCommit(BlockCommitArgs a, String jobId, BlockNode bs, BlockNode top, BlockNode base,
                                   boolean baseWasReadOnly, List<BlockNode> layers,
                                   BlockdevOnError onError) throws QmpError {
        BlockNode overlay = Chain.overlayOf(bs, top);
        if (overlay == null) {
            throw QmpError.generic("Top image file " + top.driver().filename() + " not found");
        }
        jobs.checkNotBusy(overlay, nodes.displayName(overlay));
        String backingName = a.backingFile() != null ? a.backingFile() : base.driver().filename();
        String backingFmt = base.driver().formatName();
        // commit_start(): commit_top goes between the overlay and top first, so the job's
        // intermediates can refuse consistent read while the overlay reads through the filter
        BlockNode filterNode = nodes.filterNode(JobTopFilter.commitTop(top), a.filterNodeName(), true);
        nodes.insertInChain(filterNode, overlay);
        Job[] self = new Job[1];
        CommitJob driver = new CommitJob(top, base, onError, new CommitJob.GraphActions() {
            @Override
            public void rebase() throws Exception {
                // commit_prepare(): the overlay now reads from base, the committed layers go
                try (DrainedSection s = nodes.devices().drain(overlay)) {
                    overlay.driver().setBacking(base, backingName, backingFmt);
                }
            }

            @Override
            public void release(boolean rebased) {
                // bdrv_drop_intermediate() / commit_abort(): the filter's parents go to base
                // after the rebase, back to top otherwise
                nodes.removeFromChain(filterNode, overlay, rebased ? base : top);
                nodes.releaseAfterJob(self[0], rebased, top, null);
                if (baseWasReadOnly) {
                    // commit_clean(): the base goes back to read-only once the job is gone
                    jobs.whenGone(self[0], () -> {
                        if (nodes.graph().node(base.nodeName()).orElse(null) == base) {
                            reopen.makeReadOnlyQuietly(base);
                        }
                    });
                }
            }
        });
        Job job;
        try {
            job = nodes.createJob(jobId, driver, commitUses(bs, overlay, top, layers, base), a.speed(),
                    a.autoFinalize(), a.autoDismiss());
        } catch (QmpError | RuntimeException e) {
            nodes.removeFromChain(filterNode, overlay, top);
            throw e;
        }
        self[0] = job;
        jobs.start(job);
        return job;
    }
}
