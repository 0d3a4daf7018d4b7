package jblockd.commands;

import java.io.IOException;
import java.util.Optional;

import com.fasterxml.jackson.annotation.JsonProperty;

import jblockd.block.Access;
import jblockd.block.BlockNode;
import jblockd.block.NodeGraph;
import jblockd.block.NodeUser;
import jblockd.block.Perm;
import jblockd.device.Device;
import jblockd.device.Devices;
import jblockd.device.DrainedSection;
import jblockd.qapi.QapiEvents;
import jblockd.qapi.QmpError;
import jblockd.qmp.CommandGroup;
import jblockd.qmp.CommandRegistry;

/**
 * block_resize (blockdev.c qmp_block_resize): looks the node up as bdrv_lookup_bs() does (a
 * device name, else a node name), refuses a negative size and a node a job blocks, takes the
 * resize permission through a backend of its own (so an NBD export, which unshares resize as
 * QEMU's nbd_export_create() does, or a format node over a file refuses it with QEMU's
 * permission text), then truncates inside a drained section. Exports opened afterwards, and new
 * NBD connections, see the new size.
 */
public final class ResizeCommands implements CommandGroup {

    public record BlockResizeArgs(String device, @JsonProperty("node-name") String nodeName, long size) {
    }

    public record WriteThresholdArgs(@JsonProperty("node-name") String nodeName,
                                     @JsonProperty("write-threshold") long writeThreshold) {
    }

    private final NodeGraph graph;
    private final Devices devices;
    private final QapiEvents events;

    public ResizeCommands(NodeGraph graph, Devices devices, QapiEvents events) {
        this.graph = graph;
        this.devices = devices;
        this.events = events;
    }

    @Override
    public void register(CommandRegistry r) {
        r.register("block_resize", BlockResizeArgs.class, this::blockResize);
        r.register("block-set-write-threshold", WriteThresholdArgs.class, this::setWriteThreshold);
    }

    /**
     * block-set-write-threshold (block/write-threshold.c): any node by node name, QEMU's text for
     * an unknown one; BLOCK_WRITE_THRESHOLD once when a request ends past it, then it is 0.
     */
    private Object setWriteThreshold(WriteThresholdArgs a) throws QmpError {
        BlockNode node = graph.node(a.nodeName())
                .orElseThrow(() -> QmpError.generic("Device '" + a.nodeName() + "' not found"));
        String name = node.nodeName();
        node.writeThreshold().set(a.writeThreshold(), (amount, threshold) -> events.blockWriteThreshold(name, amount, threshold));
        return null;
    }

    private Object blockResize(BlockResizeArgs a) throws QmpError {
        BlockNode node = lookup(a.device(), a.nodeName());
        if (a.size() < 0) {
            throw QmpError.generic("Parameter 'size' expects a >0 size");
        }
        if (graph.blockerOf(node).isPresent()) {
            // QERR_DEVICE_IN_USE with the device argument, printed by glibc as (null) when absent
            throw QmpError.generic("Device '" + (a.device() == null ? "(null)" : a.device()) + "' is in use");
        }
        NodeUser user = NodeUser.jobBackend(Access.of(Perm.of(Perm.RESIZE), Perm.all()));
        try {
            graph.attach(node, user);
        } catch (IOException e) {
            throw QmpError.generic(e.getMessage());
        }
        try (DrainedSection s = devices.drain(node)) {
            node.truncate(a.size());
        } catch (IOException e) {
            throw QmpError.generic(e.getMessage());
        } finally {
            graph.detach(node, user);
        }
        return null;
    }

    /** block.c bdrv_lookup_bs(): the device's root first, then a node of that name. */
    private BlockNode lookup(String device, String nodeName) throws QmpError {
        if (device != null) {
            Optional<Device> d = devices.get(device);
            if (d.isPresent()) {
                return d.get().root();
            }
        }
        if (nodeName != null) {
            Optional<BlockNode> n = graph.node(nodeName);
            if (n.isPresent()) {
                return n.get();
            }
        }
        throw QmpError.generic("Cannot find device='" + (device == null ? "" : device)
                + "' nor node-name='" + (nodeName == null ? "" : nodeName) + "'");
    }
}
