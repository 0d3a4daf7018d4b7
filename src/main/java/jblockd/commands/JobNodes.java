package jblockd.commands;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.logging.Level;
import java.util.logging.Logger;

import jblockd.block.Access;
import jblockd.block.BlockNode;
import jblockd.block.IoError;
import jblockd.block.ImageCreator;
import jblockd.block.NodeGraph;
import jblockd.block.NodeUser;
import jblockd.block.Perm;
import jblockd.device.Device;
import jblockd.device.DrainedSection;
import jblockd.device.Devices;
import jblockd.job.Job;
import jblockd.job.JobDriver;
import jblockd.job.JobRegistry;
import jblockd.job.JobUse;
import jblockd.job.mirror.JobTopFilter;
import jblockd.qapi.NewImageMode;
import jblockd.qapi.QmpError;

/**
 * Graph chores the mirror, stream and commit commands share: finding a job's root node, its
 * default id, creating the job with QAPI's defaults, putting a job's filter node above a
 * device's root and taking it away again, creating and opening a drive-* target image, and
 * releasing nodes once a job is gone. (drive-backup needs the same target creation;
 * {@link #openNewTarget} is the shared helper.) Stateless apart from the graph, devices and job
 * registry it is given.
 */
final class JobNodes {
    private static final Logger LOG = Logger.getLogger(JobNodes.class.getName());

    private final NodeGraph graph;
    private final Devices devices;
    private final JobRegistry jobs;

    JobNodes(NodeGraph graph, Devices devices, JobRegistry jobs) {
        this.graph = graph;
        this.devices = devices;
        this.jobs = jobs;
    }

    NodeGraph graph() {
        return graph;
    }

    Devices devices() {
        return devices;
    }

    /** bdrv_lookup_bs(): a device name or a node name. */
    BlockNode lookup(String deviceOrNode) throws QmpError {
        return devices.lookupNode(deviceOrNode).orElseThrow(() -> QmpError.generic(
                "Cannot find device='" + deviceOrNode + "' nor node-name='" + deviceOrNode + "'"));
    }

    /** qmp_get_root_bs(): the node must have no parent node (a job's filter above it counts). */
    BlockNode rootNode(String deviceOrNode) throws QmpError {
        BlockNode n = lookup(deviceOrNode);
        if (!isRoot(n)) {
            throw QmpError.generic("Need a root block node");
        }
        return n;
    }

    /** A node given by node name only (base-node, top-node, bottom): QEMU's text names no device. */
    BlockNode namedNode(String nodeName) throws QmpError {
        return graph.node(nodeName).orElseThrow(() ->
                QmpError.generic("Cannot find device='' nor node-name='" + nodeName + "'"));
    }

    boolean isRoot(BlockNode n) {
        return graph.usersOf(n).stream().noneMatch(u -> u.kind() == NodeUser.Kind.PARENT);
    }

    /** The device whose root is {@code node}, or null. */
    Device deviceOf(BlockNode node) {
        return devices.deviceOf(node).orElse(null);
    }

    /** block_job_create(): the default job id is the device (BlockBackend) name, else "". */
    String defaultJobId(String jobId, BlockNode node) {
        if (jobId != null) {
            return jobId;
        }
        Device d = deviceOf(node);
        return d == null ? "" : d.name();
    }

    /** The name QEMU shows for a node in "is busy" errors: its device name, else node name. */
    String displayName(BlockNode node) {
        Device d = deviceOf(node);
        return d == null ? node.nodeName() : d.name();
    }

    /**
     * block_job_create() with the QAPI defaults of the optional arguments: no speed limit,
     * auto-finalize and auto-dismiss on.
     */
    Job createJob(String jobId, JobDriver driver, List<JobUse> uses, Long speed, Boolean autoFinalize,
                  Boolean autoDismiss) throws QmpError {
        return jobs.create(jobId, driver, uses, speed == null ? 0 : speed,
                autoFinalize == null || autoFinalize, autoDismiss == null || autoDismiss);
    }

    /**
     * The node of a job's filter (mirror_top, commit_top, copy-on-read): implicit and auto-named
     * unless the user named it with {@code filter-node-name}, as QEMU hides only its own.
     */
    BlockNode filterNode(JobTopFilter filter, String filterNodeName) {
        return filterNode(filter, filterNodeName, false);
    }

    /** As {@link #filterNode(JobTopFilter, String)}, read-only when {@code readOnly} (commit_top). */
    BlockNode filterNode(JobTopFilter filter, String filterNodeName, boolean readOnly) {
        boolean auto = filterNodeName == null;
        filter.implicit(auto);
        // the filter discards as its child does (a guest discard that the child ignores needs no
        // dirty marking or copy either)
        return new BlockNode(auto ? graph.nextAutoName() : filterNodeName, auto, filter, readOnly,
                filter.child().unmap());
    }

    /**
     * commit_start()'s bdrv_append(commit_top, top): registers {@code filterNode} (read-only, as
     * QEMU opens commit_top) and, in a drained section, makes it the backing node of
     * {@code overlay} and the root of every device on the filter's child, so every parent of
     * that child reads through the filter. A device writing the child is refused as QEMU's
     * permission check on the read-only filter refuses it; nothing changes then.
     */
    void insertInChain(BlockNode filterNode, BlockNode overlay) throws QmpError {
        BlockNode child = filterNode.driver().filtered();
        for (NodeUser u : graph.usersOf(child)) {
            if (u.kind() == NodeUser.Kind.BACKEND && u.access().needs().contains(Perm.WRITE)) {
                throw QmpError.generic("Block node is read-only");
            }
        }
        try {
            graph.register(filterNode);
        } catch (IoError e) {
            throw QmpError.generic(e.getMessage());
        }
        try (DrainedSection s = devices.drain(overlay, child)) {
            overlay.driver().linkBacking(filterNode);
            for (Device d : devices.attachedTo(child)) {
                devices.replaceRoot(d, filterNode);
            }
        } catch (IoError e) {
            graph.unregister(filterNode);
            throw QmpError.generic(e.getMessage());
        }
    }

    /**
     * Takes a filter {@link #insertInChain} put in out again, drained: every parent of it
     * ({@code overlay}'s backing link, if it still points at the filter, and the devices on it)
     * goes to {@code to}: the filter's child after a cancel or failure (commit_abort()), the
     * base after the rebase. The link from {@code overlay} is changed in memory only; the
     * rebase rewrites the image header itself.
     */
    void removeFromChain(BlockNode filterNode, BlockNode overlay, BlockNode to) {
        try (DrainedSection s = devices.drain(filterNode)) {
            if (overlay.driver().backing() == filterNode) {
                try {
                    overlay.driver().linkBacking(to);
                } catch (IoError e) {
                    // linkBacking succeeded on this overlay when the filter went in
                    throw new IllegalStateException(e);
                }
            }
            for (Device d : devices.attachedTo(filterNode)) {
                devices.replaceRoot(d, to);
            }
        }
        graph.unregister(filterNode);
    }

    /**
     * bdrv_append(filter, bs): registers {@code filterNode} (a clash discards the job, which has
     * not started), attaches the job to it as its main node ({@code mainNode}: what the job
     * needs and shares there) and, in a drained section over them, moves every device whose root
     * is the filter's child onto it (named drives and anonymous ones: an NBD export on the node
     * name). A guest request in flight finishes on the old root first; from then on every guest
     * write goes through the filter.
     */
    void insertFilter(Job job, BlockNode filterNode, Access mainNode) throws QmpError {
        try {
            graph.register(filterNode);
        } catch (IoError e) {
            jobs.discard(job);
            throw QmpError.generic(e.getMessage());
        }
        try {
            jobs.attach(job, JobUse.node(filterNode, "main node", mainNode));
        } catch (QmpError e) {
            graph.unregister(filterNode);
            jobs.discard(job);
            throw e;
        }
        BlockNode child = filterNode.driver().filtered();
        try (DrainedSection s = devices.drain(child)) {
            for (Device d : devices.attachedTo(child)) {
                devices.replaceRoot(d, filterNode);
            }
        }
    }

    /**
     * Takes {@code filterNode} out again, in a drained section: the devices on it move onto
     * {@code to} (the node below, or a mirror's target after the pivot).
     */
    void removeFilter(BlockNode filterNode, BlockNode to) {
        try (DrainedSection s = devices.drain(filterNode)) {
            for (Device d : devices.attachedTo(filterNode)) {
                devices.replaceRoot(d, to);
            }
        }
        graph.unregister(filterNode);
    }

    /**
     * drive-mirror / drive-backup target: with {@code absolute-paths} the image is created
     * ({@code format}, {@code size}, backing file and its format when given), with
     * {@code existing} it must exist; then it is opened read-write as a new node.
     *
     * @param format null: probe (existing) — callers default it to the source's for creation
     */
    BlockNode openNewTarget(String target, String format, NewImageMode mode, long size,
                            String backingFile, String backingFormat, String nodeName, boolean unmap)
            throws QmpError {
        try {
            if (mode != NewImageMode.EXISTING) {
                Path path = graph.filenames().creationPath(target);
                ImageCreator creator = graph.drivers().creator(format).orElseThrow(() ->
                        QmpError.generic("Unknown file format '" + format + "'"));
                if (backingFile != null && "raw".equals(format)) {
                    throw QmpError.generic("Backing file not supported for file format 'raw'");
                }
                creator.create(new ImageCreator.Options(path, size, backingFile, backingFormat, 0, false));
            }
            // qmp_drive_mirror opens the target with the source's flags, discard=unmap included
            return graph.add(graph.imageOptions(target, format, false, false, false, nodeName, unmap));
        } catch (IOException e) {
            throw QmpError.generic(IoError.wrap(e).getMessage());
        }
    }

    /**
     * The release at a job's end: when it succeeded (pivoted, rebased), the node it replaced
     * (dropped out of the chain) goes, if auto-named; otherwise the node the command opened for
     * it ({@code opened}, null: none) goes even when named. Nothing when the job was never made.
     */
    void releaseAfterJob(Job job, boolean succeeded, BlockNode replaced, BlockNode opened) {
        if (job == null) {
            return;
        }
        if (succeeded) {
            removeWhenGone(job, replaced);
        } else if (opened != null) {
            removeWhenGone(job, opened);
        }
    }

    /**
     * Closes {@code node} once {@code job} is gone (its blocker released), if nobody uses it
     * then: QEMU drops a node when its last reference goes (the replaced source after a pivot,
     * drive-mirror's target after a cancel, a --drive chain's layers whatever their names); only
     * nodes blockdev-add made stay, until blockdev-del.
     */
    void removeWhenGone(Job job, BlockNode node) {
        if (node == null || graph.monitorOwned(node)) {
            return;
        }
        jobs.whenGone(job, () -> {
            try {
                if (graph.node(node.nodeName()).orElse(null) == node && graph.usersOf(node).isEmpty()) {
                    graph.remove(node);
                }
            } catch (IOException | RuntimeException e) {
                LOG.log(Level.WARNING, "releasing " + node, e);
            }
        });
    }
}
