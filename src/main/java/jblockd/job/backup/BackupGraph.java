package jblockd.job.backup;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.logging.Level;
import java.util.logging.Logger;

import jblockd.block.BlockNode;
import jblockd.block.IoError;
import jblockd.block.NodeGraph;
import jblockd.block.cbw.BlockCopy;
import jblockd.block.cbw.CopyBeforeWriteDriver;
import jblockd.device.Device;
import jblockd.device.DrainedSection;
import jblockd.device.Devices;
import jblockd.job.Job;
import jblockd.job.JobRegistry;

/**
 * The graph change of a backup: a copy-before-write filter node above the source, put in place
 * before drive-backup / blockdev-backup replies (that is what makes the copy point-in-time),
 * and taken out again when the job ends.
 * <p>
 * Who sees the filter: every {@link Device} whose root is the source node is re-pointed at the
 * filter ({@link Devices#replaceRoot}). That covers a named drive, a drive addressed by its root
 * node-name, and NBD exports, because exports reach their node through a Device: a named one, or
 * for an export made on a node-name an anonymous one registered with
 * {@link Devices#addAnonymous} (so {@link Devices#attachedTo} finds it). Other
 * parent nodes of the source are not re-pointed (no jblockd driver has a writable parent above
 * a device root).
 */
public final class BackupGraph {
    private static final Logger LOG = Logger.getLogger(BackupGraph.class.getName());

    private final NodeGraph graph;
    private final Devices devices;
    private final BlockNode source;
    private final BlockNode filter;
    private final BlockCopy copy;
    private final BlockNode target;
    private final boolean ownsTarget;
    private final List<Device> moved = new ArrayList<>();
    private JobRegistry registry;
    private Job job;
    private boolean removed;
    /** The target's reads are tracked for the filter (classic fleecing). */
    private boolean trackingTarget;

    private BackupGraph(NodeGraph graph, Devices devices, BlockNode source, BlockNode filter, BlockCopy copy,
                        BlockNode target, boolean ownsTarget) {
        this.graph = graph;
        this.devices = devices;
        this.source = source;
        this.filter = filter;
        this.copy = copy;
        this.target = target;
        this.ownsTarget = ownsTarget;
    }

    /**
     * Creates and registers the filter node ({@code filterNodeName} or an auto name); devices
     * are re-pointed by {@link #activate()}.
     *
     * @param ownsTarget the target was opened for this backup (drive-backup) and is closed at the end
     * @throws IoError {@code Duplicate nodes with node-name='x'}
     */
    public static BackupGraph prepare(NodeGraph graph, Devices devices, BlockNode source, BlockCopy copy,
                                      String filterNodeName, BlockNode target, boolean ownsTarget) throws IoError {
        boolean auto = filterNodeName == null;
        String name = auto ? graph.nextAutoName() : filterNodeName;
        BlockNode filter = new BlockNode(name, auto, new CopyBeforeWriteDriver(source, copy), source.readOnly(),
                source.unmap());
        graph.register(filter);
        return new BackupGraph(graph, devices, source, filter, copy, target, ownsTarget);
    }

    public BlockNode filter() {
        return filter;
    }

    /** Ties the graph to its job (which keeps the filter as its main node): it releases the target at the end. */
    public void attach(JobRegistry jobs, Job j) {
        this.registry = jobs;
        this.job = j;
    }

    /**
     * Re-points every device whose root is the source at the filter, in a drained section: a
     * guest write in flight lands before the point in time, every later one passes the filter.
     */
    public synchronized void activate() {
        try (DrainedSection s = devices.drain(source)) {
            if (readsThrough(target, source)) {
                // Classic fleecing: a reader of the target reads the clusters not copied yet
                // from the source; a guest write waits for such reads once it has copied.
                target.trackReads(((CopyBeforeWriteDriver) filter.driver()).frozenReads());
                trackingTarget = true;
            }
            for (Device d : devices.attachedTo(source)) {
                devices.replaceRoot(d, filter);
                moved.add(d);
            }
        }
    }

    /** True when {@code node} reads unallocated ranges from {@code below} (through backing links or filters). */
    public static boolean readsThrough(BlockNode node, BlockNode below) {
        for (BlockNode n = node; n != null; ) {
            BlockNode next = n.driver().backing() != null ? n.driver().backing() : n.driver().filtered();
            if (next == below) {
                return true;
            }
            n = next;
        }
        return false;
    }

    /**
     * Undoes {@link #prepare}/{@link #activate}: devices back on the source in a drained section
     * (no guest request is left in the filter afterwards), copies in flight finished, the filter
     * unregistered, the target flushed and (when owned) closed. Idempotent; never throws.
     */
    public synchronized void remove() {
        if (removed) {
            return;
        }
        removed = true;
        try (DrainedSection s = devices.drain(filter)) {
            for (Device d : moved) {
                if (d.root() == filter) {
                    devices.replaceRoot(d, source);
                }
            }
        }
        // The drained section moved every guest off the filter; what is left in flight is the
        // job's own copying. Once that is done the filter is unregistered and closed, so a
        // request that still reached it would fail rather than bypass the copy (nothing
        // passes an old filter through: there is no "inactive" mode any more).
        copy.awaitIdle();
        // no drain may write the target once it is released; what is still saved never reached
        // it (a failed or cancelled backup) and its memory goes
        copy.stopDrains();
        copy.dropSaved();
        if (trackingTarget) {
            target.trackReads(null);
        }
        graph.unregister(filter);
        try {
            filter.close();
        } catch (IOException e) {
            LOG.log(Level.WARNING, "backup: closing the filter failed", e);
        }
        try {
            if (!target.readOnly()) {
                target.flush();
            }
        } catch (IOException e) {
            LOG.log(Level.WARNING, "backup: flushing the target failed", e);
        }
        if (ownsTarget) {
            if (registry != null && job != null) {
                registry.unblock(job, target);
            }
            try {
                graph.remove(target);
            } catch (IOException e) {
                LOG.log(Level.WARNING, "backup: closing the target failed", e);
            }
        }
    }
}
