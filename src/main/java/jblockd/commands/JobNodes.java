package jblockd.commands;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import java.util.logging.Level;
import java.util.logging.Logger;

import jblockd.block.BlockNode;
import jblockd.block.IoError;
import jblockd.block.ImageCreator;
import jblockd.block.NodeGraph;
import jblockd.device.Device;
import jblockd.device.Devices;
import jblockd.job.Job;
import jblockd.qapi.JobStatus;
import jblockd.qapi.NewImageMode;
import jblockd.qapi.QmpError;

/**
 * Graph chores the mirror, stream and commit commands share: finding a job's root node, its
 * default id, creating and opening a drive-* target image, and releasing nodes once a job is
 * gone. (drive-backup needs the same target creation; {@link #openNewTarget} is the shared
 * helper.) Stateless apart from the graph and devices it is given.
 */
final class JobNodes {
    private static final Logger LOG = Logger.getLogger(JobNodes.class.getName());

    private final NodeGraph graph;
    private final Devices devices;

    JobNodes(NodeGraph graph, Devices devices) {
        this.graph = graph;
        this.devices = devices;
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

    boolean isRoot(BlockNode n) {
        for (String u : graph.usersOf(n)) {
            if (u.startsWith("parent:")) {
                return false;
            }
        }
        return true;
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
     * drive-mirror / drive-backup target: with {@code absolute-paths} the image is created
     * ({@code format}, {@code size}, backing file and its format when given), with
     * {@code existing} it must exist; then it is opened read-write as a new node.
     *
     * @param format null: probe (existing) — callers default it to the source's for creation
     */
    BlockNode openNewTarget(String target, String format, NewImageMode mode, long size,
                            String backingFile, String backingFormat, String nodeName) throws QmpError {
        Path path = Path.of(target);
        try {
            if (mode != NewImageMode.EXISTING) {
                ImageCreator creator = graph.drivers().creator(format).orElseThrow(() ->
                        QmpError.generic("Unknown file format '" + format + "'"));
                if (backingFile != null && "raw".equals(format)) {
                    throw QmpError.generic("Backing file not supported for file format 'raw'");
                }
                creator.create(new ImageCreator.Options(path, size, backingFile, backingFormat, 0, false));
            } else if (!target.startsWith("blkdebug:") && !Files.exists(path)) {
                throw QmpError.generic("Could not open '" + target + "': No such file or directory");
            }
            return graph.add(graph.imageOptions(path, format, false, false, nodeName));
        } catch (IOException e) {
            throw QmpError.generic(IoError.wrap(e).getMessage());
        }
    }

    /**
     * Closes {@code node} once {@code job} is gone (its blocker released), if nobody uses it
     * then: QEMU drops a drive's nodes when their last reference goes (the replaced source after
     * a pivot, drive-mirror's target after a cancel). Nodes added by name stay unless
     * {@code evenNamed}.
     */
    void removeWhenGone(Job job, BlockNode node, boolean evenNamed) {
        if (node == null || (!evenNamed && !node.autoNamed())) {
            return;
        }
        Thread.ofVirtual().name("release-" + node.nodeName()).start(() -> {
            while (!job.awaitStatus(JobStatus.NULL, 1, TimeUnit.HOURS)) {
                // a job left concluded waits for job-dismiss
            }
            try {
                if (graph.node(node.nodeName()).orElse(null) == node && graph.usersOf(node).isEmpty()) {
                    graph.remove(node);
                }
            } catch (IOException e) {
                LOG.log(Level.FINE, "releasing " + node, e);
            }
        });
    }
}
