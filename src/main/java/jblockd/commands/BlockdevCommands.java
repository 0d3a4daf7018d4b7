package jblockd.commands;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.OptionalLong;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.databind.node.ObjectNode;

import jblockd.block.BackingHeader;
import jblockd.block.BlockDriver;
import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.FormatSpecific;
import jblockd.block.SnapshotInfo;
import jblockd.block.NodeGraph;
import jblockd.device.Device;
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

    /**
     * qapi/block-core.json ImageInfo as QEMU 7.2's bdrv_query_image_info() fills it; absent
     * members are omitted as QEMU omits them (no {@code snapshots}: jblockd reports none).
     */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record ImageInfo(String filename, String format, Boolean dirtyFlag, Long actualSize,
                            long virtualSize, Integer clusterSize, String backingFilename,
                            String fullBackingFilename, String backingFilenameFormat,
                            List<SnapshotInfoWire> snapshots, ImageInfo backingImage,
                            ImageInfoSpecific formatSpecific) {
    }

    /** qapi/block-core.json SnapshotInfo; QEMU splits the guest clock into seconds and nanoseconds. */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record SnapshotInfoWire(String id, String name, long vmStateSize, long dateSec, long dateNsec,
                                   long vmClockSec, long vmClockNsec, Long icount) {
        static SnapshotInfoWire of(SnapshotInfo s) {
            return new SnapshotInfoWire(s.id(), s.name(), s.vmStateSize(), s.dateSec(), s.dateNsec(),
                    s.vmClockNsec() / 1_000_000_000L, s.vmClockNsec() % 1_000_000_000L, s.icount());
        }
    }

    /** qapi/block-core.json Qcow2BitmapInfo. */
    public record Qcow2BitmapInfo(String name, long granularity, List<String> flags) {
    }

    /** qapi/block-core.json ImageInfoSpecific: a union with {@code type} and its {@code data}. */
    public record ImageInfoSpecific(String type, Object data) {
    }

    /** qapi/block-core.json ImageInfoSpecificQCow2 (the members QEMU 7.2 fills for v2 / v3). */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record ImageInfoSpecificQCow2(String compat, Boolean lazyRefcounts, Boolean corrupt,
                                         int refcountBits, Boolean extendedL2, String compressionType,
                                         List<Qcow2BitmapInfo> bitmaps) {
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
                                  @JsonProperty("iops_wr") long iopsWr, ImageInfo image,
                                  @JsonProperty("write_threshold") long writeThreshold,
                                  BlockdevCacheInfo cache) {
    }

    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record BlockInfo(String device, boolean locked, boolean removable, BlockDeviceInfo inserted,
                            @JsonProperty("io-status") String ioStatus, String type) {
    }

    private final NodeGraph graph;
    private final Devices devices;
    /** Nodes added at the top level of blockdev-add: the only ones blockdev-del may delete. */
    private final Set<String> monitorOwned = ConcurrentHashMap.newKeySet();
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
        monitorOwned.add(node.nodeName());
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
        commons.put(node.nodeName(), options.common());
        return node;
    }

    /** blockdev.c qmp_blockdev_del(), checks in QEMU's order. */
    private Object blockdevDel(BlockdevDelArgs args) throws QmpError {
        String name = args.nodeName();
        Optional<BlockNode> found = graph.node(name);
        if (found.isEmpty()) {
            throw QmpError.generic("Failed to find node with node-name='" + name + "'");
        }
        BlockNode node = found.get();
        List<String> users = graph.usersOf(node);
        // A BlockBackend (device or export) on the node: "Node x is in use"
        if (devices.deviceOf(node).isPresent()
                || users.stream().anyMatch(u -> u.startsWith("device:") || u.startsWith("export:"))) {
            throw QmpError.generic("Node " + name + " is in use");
        }
        // Op blockers (jobs and other users that are not parent nodes)
        Optional<String> blocker = users.stream().filter(u -> !u.startsWith("parent:")).findFirst();
        if (blocker.isPresent()) {
            throw QmpError.generic("Node '" + name + "' is busy: " + blockerText(blocker.get()));
        }
        if (!monitorOwned.contains(name)) {
            throw QmpError.generic("Node " + name + " is not owned by the monitor");
        }
        if (!users.isEmpty()) {
            throw QmpError.generic("Block device " + name + " is in use");
        }
        try {
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
        monitorOwned.remove(name);
        inlineChildren.remove(name);
        commons.remove(name);
        return null;
    }

    private static String blockerText(String user) {
        if (user.startsWith("job:")) {
            String rest = user.substring(4);
            return "block device is in use by block job: " + rest;
        }
        return user;
    }

    private List<BlockInfo> queryBlock() throws QmpError {
        List<BlockInfo> list = new ArrayList<>();
        for (Device d : devices.all()) {
            // block/qapi.c bdrv_query_info(): the device shows what is below its implicit filters
            BlockDeviceInfo inserted = deviceInfo(skipImplicit(d.root()), false, true);
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
            list.add(deviceInfo(nodes.get(i), flat, false));
        }
        return list;
    }

    /**
     * block/qapi.c bdrv_block_device_info(): {@code backing_file} names the COW backing node,
     * while {@code backing_file_depth} and the {@code backing-image} chain follow
     * bdrv_filter_or_cow_bs() (a filter's child counts as its backing). {@code flat}: no chain,
     * depth 0. {@code forDevice}: query-block, which also skips implicit filters in the chain.
     */
    BlockDeviceInfo deviceInfo(BlockNode node, boolean flat, boolean forDevice) throws QmpError {
        try {
            BlockNode backing = cowBacking(node);
            int depth = 0;
            if (!flat) {
                for (BlockNode b = next(node, forDevice); b != null && depth < MAX_CHAIN; b = next(b, forDevice)) {
                    depth++;
                }
            }
            BlockdevOptions.Common c = commons.getOrDefault(node.nodeName(), BlockdevOptions.Common.defaults());
            return new BlockDeviceInfo(node.driver().filename(), node.nodeName(), node.readOnly(),
                    formatOf(node.driver()), backing == null ? null : backing.driver().filename(),
                    depth, false, "off", 0, 0, 0, 0, 0, 0, imageInfo(node, flat, forDevice, 0), 0,
                    new BlockdevCacheInfo(true, c.cacheDirect(), c.cacheNoFlush()));
        } catch (IOException e) {
            throw QmpError.generic(e.getMessage());
        }
    }

    /** QEMU's bound on chain walks is the graph itself; ours guards against a cycle bug. */
    private static final int MAX_CHAIN = 1000;

    /**
     * bdrv_filter_or_cow_bs(): a filter's filtered child, else the COW backing; for query-block
     * implicit filters below are skipped as well.
     */
    private static BlockNode next(BlockNode node, boolean skipImplicit) {
        BlockNode f = node.driver().filtered();
        BlockNode n = f != null ? f : node.driver().backing();
        return skipImplicit ? skipImplicit(n) : n;
    }

    /** bdrv_cow_bs(): filters have no COW backing (backing_file is not shown for them). */
    private static BlockNode cowBacking(BlockNode node) {
        return node.driver().filtered() != null ? null : node.driver().backing();
    }

    /** block.c bdrv_skip_implicit_filters(). */
    private static BlockNode skipImplicit(BlockNode node) {
        BlockNode n = node;
        for (int i = 0; n != null && n.driver().implicitFilter() && i < MAX_CHAIN; i++) {
            n = n.driver().filtered();
        }
        return n;
    }

    /** bs->drv->format_name: a filter shows its own driver name. */
    private static String formatOf(BlockDriver d) {
        return d.filtered() != null ? d.driverName() : d.formatName();
    }

    /** block/qapi.c bdrv_query_image_info(), recursing down the chain unless {@code flat}. */
    private static ImageInfo imageInfo(BlockNode node, boolean flat, boolean forDevice, int level)
            throws IOException {
        BlockDriver d = node.driver();
        BlockNode next = next(node, forDevice);
        ImageInfo backingImage = null;
        if (!flat && next != null && level < MAX_CHAIN) {
            backingImage = imageInfo(next, false, forDevice, level + 1);
        }
        // bdrv_get_info() success decides dirty-flag and cluster-size (0 is not shown)
        Boolean dirty = d.dirtyFlag().orElse(null);
        int cluster = d.clusterSize();
        OptionalLong allocated = d.allocatedFileSize();
        Optional<BackingHeader> header = d.backingHeader();
        String backingName = header.map(BackingHeader::filename).orElse(null);
        List<SnapshotInfoWire> snapshots = d.snapshots().stream().map(SnapshotInfoWire::of).toList();
        return new ImageInfo(d.filename(), formatOf(d), dirty,
                allocated.isPresent() ? allocated.getAsLong() : null, sectorRounded(node.length()),
                dirty != null && cluster > 0 ? cluster : null, backingName,
                backingName == null ? null : fullBackingFilename(d.filename(), backingName),
                header.map(BackingHeader::format).orElse(null), snapshots.isEmpty() ? null : snapshots, backingImage,
                d.formatSpecific().map(BlockdevCommands::specific).orElse(null));
    }

    /** bdrv_getlength() is bdrv_nb_sectors() * 512: a file's odd length shows rounded up. */
    private static long sectorRounded(long length) {
        return length > Long.MAX_VALUE - 511 ? length : (length + 511) & ~511L;
    }

    private static ImageInfoSpecific specific(FormatSpecific f) {
        return switch (f) {
            case FormatSpecific.Qcow2 q -> new ImageInfoSpecific(q.type(), new ImageInfoSpecificQCow2(q.compat(),
                    q.lazyRefcounts(), q.corrupt(), q.refcountBits(), q.extendedL2(), q.compressionType(),
                    q.bitmaps() == null ? null : q.bitmaps().stream()
                            .map(b -> new Qcow2BitmapInfo(b.name(), b.granularity(), b.flags())).toList()));
        };
    }

    /**
     * bdrv_get_full_backing_filename(): an absolute name or one with a protocol prefix stays as
     * written; a relative one is taken relative to the directory of the image's file name
     * (util/cutils.c path_combine()), so a relative image name gives a relative result.
     */
    static String fullBackingFilename(String imageFilename, String backing) {
        if (backing.startsWith("/") || hasProtocol(backing) || imageFilename == null) {
            return backing;
        }
        int slash = imageFilename.lastIndexOf('/');
        return slash < 0 ? backing : imageFilename.substring(0, slash + 1) + backing;
    }

    /** block.c path_has_protocol(): a ':' before any '/'. */
    private static boolean hasProtocol(String name) {
        int colon = name.indexOf(':');
        int slash = name.indexOf('/');
        return colon >= 0 && (slash < 0 || colon < slash);
    }
}
