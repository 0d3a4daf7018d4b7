package jblockd.commands;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.databind.node.ObjectNode;

import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.BlockdevRef;
import jblockd.block.NodeGraph;
import jblockd.block.NodeUser;
import jblockd.device.Device;
import jblockd.device.DrainedSection;
import jblockd.device.Devices;
import jblockd.qapi.QmpError;
import jblockd.qmp.CommandGroup;
import jblockd.qmp.CommandRegistry;

/**
 * The graph commands of block-core.json: blockdev-add, blockdev-del, query-block,
 * query-named-block-nodes (qemu/qemu blockdev.c, block/qapi.c). Thread-safe: graph changes
 * are serialised by {@link NodeGraph}.
 */
public final class BlockdevCommands implements CommandGroup {

    public record BlockdevDelArgs(String nodeName) {
    }

    public record NamedNodesArgs(Boolean flat) {
    }

    public record BlockdevCacheInfo(boolean writeback, boolean direct, boolean noFlush) {
    }

    /** qapi/block-core.json BlockDeviceInfo; QEMU spells some members with underscores. */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record BlockDeviceInfo(String file, String nodeName, boolean ro, String drv,
                                  @JsonProperty("backing_file") String backingFile,
                                  @JsonProperty("backing_file_depth") int backingFileDepth,
                                  boolean encrypted,
                                  @JsonProperty("detect_zeroes") String detectZeroes,
                                  long bps, @JsonProperty("bps_rd") long bpsRd,
                                  @JsonProperty("bps_wr") long bpsWr, long iops,
                                  @JsonProperty("iops_rd") long iopsRd,
                                  @JsonProperty("iops_wr") long iopsWr, ImageInfos.ImageInfo image,
                                  @JsonProperty("write_threshold") long writeThreshold,
                                  BlockdevCacheInfo cache,
                                  List<BitmapCommands.BlockDirtyInfo> dirtyBitmaps) {
    }

    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record BlockInfo(String device, boolean locked, boolean removable, BlockDeviceInfo inserted,
                            @JsonProperty("io-status") String ioStatus, String type) {
    }

    private final NodeGraph graph;
    private final Devices devices;
    /**
     * Children opened inline with a monitor-owned node (by its name), parents before children:
     * QEMU drops them with their parent (their only reference), whatever their names.
     */
    private final Map<String, List<BlockNode>> inlineChildren = new ConcurrentHashMap<>();
    /** Cache options of nodes by name, for query-block's {@code cache} member. */
    private final Map<String, BlockdevOptions.Common> commons = new ConcurrentHashMap<>();

    public BlockdevCommands(NodeGraph graph, Devices devices) {
        this.graph = graph;
        this.devices = devices;
    }

    @Override
    public void register(CommandRegistry r) {
        r.register("blockdev-add", ObjectNode.class, this::blockdevAdd);
        r.register("blockdev-del", BlockdevDelArgs.class, this::blockdevDel);
        r.register("query-block", Void.class, a -> queryBlock());
        r.register("query-named-block-nodes", NamedNodesArgs.class,
                a -> queryNamedBlockNodes(a.flat() != null && a.flat()));
    }

    private Object blockdevAdd(ObjectNode args) throws QmpError {
        BlockdevOptions options = BlockdevOptionsCodec.decode(args);
        String name = options.common().nodeName();
        if (name == null) {
            throw QmpError.generic("'node-name' must be specified for the root node");
        }
        if (devices.get(name).isPresent()) {
            throw QmpError.generic("node-name=" + name + " is conflicting with a device id");
        }
        Set<BlockNode> before = Set.copyOf(graph.nodes());
        BlockNode node = openNode(options);
        graph.markMonitorOwned(node);
        List<BlockNode> inline = new ArrayList<>();
        collectNew(node, before, inline);
        inline.remove(node);
        inlineChildren.put(node.nodeName(), inline);
        return null;
    }

    /** The subtree under {@code node} that did not exist before (parents first). */
    private static void collectNew(BlockNode node, Set<BlockNode> before, List<BlockNode> out) {
        if (node == null || before.contains(node) || out.contains(node)) {
            return;
        }
        out.add(node);
        for (jblockd.block.BlockChild c : node.driver().children()) {
            collectNew(c.node(), before, out);
        }
    }

    /** Opens a node (and its inline children) and remembers its cache options for queries. */
    public BlockNode openNode(BlockdevOptions options) throws QmpError {
        BlockNode node;
        try {
            node = graph.add(options);
        } catch (IOException e) {
            throw QmpError.generic(e.getMessage());
        }
        rememberCommons(options, node);
        return node;
    }

    /**
     * Records the options of {@code node} and of the children opened inline with it (their own
     * or inherited cache options show in query-named-block-nodes, as in QEMU).
     */
    private void rememberCommons(BlockdevOptions options, BlockNode node) {
        commons.put(node.nodeName(), options.common());
        Map<String, BlockdevRef> inline = switch (options) {
            case BlockdevOptions.Raw r -> Map.of("file", r.file());
            case BlockdevOptions.Qcow2 q -> q.backing() == null ? Map.of("file", q.file())
                    : Map.of("file", q.file(), "backing", q.backing());
            case BlockdevOptions.Blkdebug b -> Map.of("image", b.image());
            case BlockdevOptions.File f -> Map.of();
            case BlockdevOptions.NullCo n -> Map.of();
            case BlockdevOptions.Nbd n -> Map.of();
            case BlockdevOptions.Rbd r -> Map.of();
            case BlockdevOptions.CopyBeforeWrite w -> Map.of("file", w.file(), "target", w.target());
            case BlockdevOptions.SnapshotAccess a -> Map.of("file", a.file());
        };
        for (jblockd.block.BlockChild c : node.driver().children()) {
            if (inline.get(c.role()) instanceof BlockdevRef.Inline i && c.node() != null) {
                rememberCommons(i.options(), c.node());
            }
        }
    }

    /** The node's detect-zeroes option (off for the nodes jobs insert, built without options). */
    private static String detectZeroes(BlockNode node) {
        BlockdevOptions o = node.opened().options();
        return o == null ? "off" : o.common().detectZeroes();
    }

    /** blockdev.c qmp_blockdev_del(), checks in QEMU's order. */
    private Object blockdevDel(BlockdevDelArgs args) throws QmpError {
        String name = args.nodeName();
        Optional<BlockNode> found = graph.node(name);
        if (found.isEmpty()) {
            throw QmpError.generic("Failed to find node with node-name='" + name + "'");
        }
        BlockNode node = found.get();
        List<NodeUser> users = graph.usersOf(node);
        // bdrv_has_blk(): a BlockBackend (device, export, a job's own) on the node
        if (devices.deviceOf(node).isPresent() || users.stream().anyMatch(u -> u.kind() == NodeUser.Kind.BACKEND)) {
            throw QmpError.generic("Node " + name + " is in use");
        }
        // bdrv_op_is_blocked(BLOCK_OP_TYPE_DRIVE_DEL): a job keeps the node
        Optional<NodeUser> blocker = graph.blockerOf(node);
        if (blocker.isPresent()) {
            throw QmpError.generic("Node '" + name + "' is busy: " + blocker.get().blocker());
        }
        // bdrv_set_backing_hd() puts an op blocker on the backing node that blocks DRIVE_DEL:
        // "node is used as backing hd of 'PARENT'" (the parent's device name, else node name)
        Optional<BlockNode> backingParent = List.copyOf(graph.nodes()).reversed().stream()
                .filter(p -> p.driver().backing() == node).findFirst();
        if (backingParent.isPresent()) {
            BlockNode p = backingParent.get();
            String parentName = devices.deviceOf(p).map(Device::name).orElse(p.nodeName());
            throw QmpError.generic("Node '" + name + "' is busy: node is used as backing hd of '"
                    + parentName + "'");
        }
        if (!graph.monitorOwned(node)) {
            throw QmpError.generic("Node " + name + " is not owned by the monitor");
        }
        if (!users.isEmpty()) {
            throw QmpError.generic("Block device " + name + " is in use");
        }
        // No device reaches an unused node, so the section is usually empty; it is the rule for
        // every graph change all the same (a parent a later change adds is covered with it).
        try (DrainedSection s = devices.drain(node)) {
            graph.remove(node);
            for (BlockNode child : inlineChildren.getOrDefault(name, List.of())) {
                if (graph.node(child.nodeName()).orElse(null) == child && graph.usersOf(child).isEmpty()) {
                    graph.remove(child);
                    commons.remove(child.nodeName());
                }
            }
        } catch (IOException e) {
            throw QmpError.generic(e.getMessage());
        }
        inlineChildren.remove(name);
        commons.remove(name);
        return null;
    }

    private List<BlockInfo> queryBlock() throws QmpError {
        List<BlockInfo> list = new ArrayList<>();
        for (Device d : devices.all()) {
            // block/qapi.c bdrv_query_info(): the device shows what is below its implicit filters
            BlockDeviceInfo inserted = deviceInfo(ImageInfos.skipImplicit(d.root()), false, true,
                    d.writeCacheEnabled());
            String io = d.ioStatusEnabled() ? d.ioStatus().wire() : null;
            list.add(new BlockInfo(d.name(), false, true, inserted, io, "unknown"));
        }
        return list;
    }

    private List<BlockDeviceInfo> queryNamedBlockNodes(boolean flat) throws QmpError {
        List<BlockNode> nodes = graph.nodesInNamingOrder();
        // QEMU lists the most recently named node first
        List<BlockDeviceInfo> list = new ArrayList<>();
        for (int i = nodes.size() - 1; i >= 0; i--) {
            // a node has no write cache of its own: QEMU shows writeback on when no BlockBackend is asked
            list.add(deviceInfo(nodes.get(i), flat, false, true));
        }
        return list;
    }

    /**
     * block/qapi.c bdrv_block_device_info(): {@code backing_file} names the COW backing node,
     * while {@code backing_file_depth} and the {@code backing-image} chain follow
     * bdrv_filter_or_cow_bs() (a filter's child counts as its backing). {@code flat}: no chain,
     * depth 0. {@code forDevice}: query-block, which also skips implicit filters in the chain.
     * {@code writeCache}: the device's write cache, {@code cache.writeback}. {@code dirty-bitmaps}
     * lists the node's own bitmaps (omitted when it has none), for query-block's {@code inserted}
     * as for query-named-block-nodes.
     */
    BlockDeviceInfo deviceInfo(BlockNode node, boolean flat, boolean forDevice, boolean writeCache)
            throws QmpError {
        try {
            BlockNode backing = ImageInfos.cowBacking(node);
            int depth = 0;
            if (!flat) {
                for (BlockNode b = ImageInfos.next(node, forDevice); b != null && depth < ImageInfos.MAX_CHAIN;
                        b = ImageInfos.next(b, forDevice)) {
                    depth++;
                }
            }
            // the options the node runs with (a reopen changes them), else those recorded at add
            BlockdevOptions.Common c = node.opened().options() != null ? node.opened().options().common()
                    : commons.getOrDefault(node.nodeName(), BlockdevOptions.Common.defaults());
            return new BlockDeviceInfo(node.driver().filename(), node.nodeName(), node.readOnly(),
                    ImageInfos.formatOf(node.driver()), backing == null ? null : backing.driver().filename(),
                    depth, false, detectZeroes(node), 0, 0, 0, 0, 0, 0, ImageInfos.imageInfo(node, flat, forDevice),
                    node.writeThreshold().threshold(),
                    new BlockdevCacheInfo(writeCache, c.cacheDirect(), c.cacheNoFlush()),
                    BitmapCommands.dirtyBitmaps(node));
        } catch (IOException e) {
            throw QmpError.generic(e.getMessage());
        }
    }

}
