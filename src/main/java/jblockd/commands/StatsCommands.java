package jblockd.commands;

import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;

import jblockd.block.BlockChild;
import jblockd.block.BlockNode;
import jblockd.block.NodeGraph;
import jblockd.block.NodeStats;
import jblockd.device.Device;
import jblockd.device.Devices;
import jblockd.device.IoStats;
import jblockd.qmp.CommandGroup;
import jblockd.qmp.CommandRegistry;

/**
 * query-blockstats (block/qapi.c qmp_query_blockstats, bdrv_query_bds_stats,
 * bdrv_query_blk_stats). Without {@code query-nodes}: one entry per named device, its stats the
 * device's accounting ({@link IoStats}: what guests did through it, NBD exports on it included)
 * plus the root's {@code wr_highest_offset}, the node chain nested below as {@code parent} (the
 * data child) and {@code backing} (the filtered or COW child), implicit filters skipped. With
 * {@code query-nodes}: one entry per node, in graph order, with only what QEMU keeps per node
 * (wr_highest_offset, the file driver's discard counters) and {@code parent} nested; no device
 * accounting (QEMU's nodes have none, so every other counter is 0). Exports made on a node
 * name have no device name and, as QEMU's anonymous BlockBackends, are not listed.
 */
public final class StatsCommands implements CommandGroup {

    public record QueryArgs(@JsonProperty("query-nodes") Boolean queryNodes) {
    }

    private static final JsonNodeFactory NF = JsonNodeFactory.instance;

    private final NodeGraph graph;
    private final Devices devices;

    public StatsCommands(NodeGraph graph, Devices devices) {
        this.graph = graph;
        this.devices = devices;
    }

    @Override
    public void register(CommandRegistry r) {
        r.register("query-blockstats", QueryArgs.class,
                a -> query(a != null && a.queryNodes() != null && a.queryNodes()));
    }

    ArrayNode query(boolean queryNodes) {
        ArrayNode out = NF.arrayNode();
        if (queryNodes) {
            for (BlockNode n : graph.nodes()) {
                out.add(nodeStats(n, false));
            }
            return out;
        }
        for (Device d : devices.all()) {
            ObjectNode s = NF.objectNode();
            s.put("device", d.name());
            ObjectNode node = nodeStats(ImageInfos.skipImplicit(d.root()), true);
            // device first, as QEMU's struct order; then the node's members
            s.setAll(node);
            fillDevice((ObjectNode) s.get("stats"), d.stats());
            out.add(s);
        }
        return out;
    }

    /** bdrv_query_bds_stats(): the node's own counters, parent and (device level) backing. */
    private ObjectNode nodeStats(BlockNode n, boolean deviceLevel) {
        ObjectNode s = NF.objectNode();
        // generated names (#blockNNN) show too, as QEMU's
        s.put("node-name", n.nodeName());
        s.set("stats", emptyStats(n.stats()));
        if ("file".equals(n.driver().driverName())) {
            NodeStats st = n.stats();
            ObjectNode spec = NF.objectNode();
            spec.put("driver", "file");
            spec.put("discard-nb-ok", st.discardNbOk());
            spec.put("discard-nb-failed", st.discardNbFailed());
            spec.put("discard-bytes-ok", st.discardBytesOk());
            s.set("driver-specific", spec);
        }
        BlockNode parent = dataChild(n);
        if (parent != null) {
            s.set("parent", nodeStats(parent, deviceLevel));
        }
        if (deviceLevel) {
            BlockNode next = ImageInfos.next(n, true);
            if (next != null) {
                s.set("backing", nodeStats(next, true));
            }
        }
        return s;
    }

    /**
     * bdrv_primary_child() when it stores data or is filtered: {@code file} for formats and
     * filters, blkdebug's {@code image}; a node with only a backing child has none.
     */
    private static BlockNode dataChild(BlockNode n) {
        for (BlockChild c : n.driver().children()) {
            if (c.node() != null && ("file".equals(c.role()) || "image".equals(c.role()))) {
                return c.node();
            }
        }
        return null;
    }

    private static ObjectNode emptyStats(NodeStats node) {
        ObjectNode st = NF.objectNode();
        for (String k : new String[] {"rd_bytes", "wr_bytes", "unmap_bytes", "rd_operations", "wr_operations",
                "unmap_operations", "rd_total_time_ns", "wr_total_time_ns", "unmap_total_time_ns",
                "flush_operations", "flush_total_time_ns"}) {
            st.put(k, 0L);
        }
        st.put("wr_highest_offset", node.wrHighestOffset());
        for (String k : new String[] {"rd_merged", "wr_merged", "unmap_merged",
                "failed_rd_operations", "failed_wr_operations", "failed_unmap_operations",
                "failed_flush_operations", "invalid_rd_operations", "invalid_wr_operations",
                "invalid_unmap_operations", "invalid_flush_operations"}) {
            st.put(k, 0L);
        }
        st.put("account_invalid", false);
        st.put("account_failed", false);
        // no latency intervals are configured (QEMU: stats-intervals), so no timed stats
        st.set("timed_stats", NF.arrayNode());
        return st;
    }

    /** bdrv_query_blk_stats(): the device's accounting over the node's counters. */
    private static void fillDevice(ObjectNode st, IoStats stats) {
        IoStats.Snapshot rd = stats.snapshot(IoStats.Type.READ);
        IoStats.Snapshot wr = stats.snapshot(IoStats.Type.WRITE);
        IoStats.Snapshot un = stats.snapshot(IoStats.Type.UNMAP);
        IoStats.Snapshot fl = stats.snapshot(IoStats.Type.FLUSH);
        st.put("rd_bytes", rd.bytes());
        st.put("wr_bytes", wr.bytes());
        st.put("unmap_bytes", un.bytes());
        st.put("rd_operations", rd.ops());
        st.put("wr_operations", wr.ops());
        st.put("unmap_operations", un.ops());
        st.put("rd_total_time_ns", rd.totalTimeNs());
        st.put("wr_total_time_ns", wr.totalTimeNs());
        st.put("unmap_total_time_ns", un.totalTimeNs());
        st.put("flush_operations", fl.ops());
        st.put("flush_total_time_ns", fl.totalTimeNs());
        stats.idleTimeNs().ifPresent(t -> st.put("idle_time_ns", t));
        st.put("failed_rd_operations", rd.failed());
        st.put("failed_wr_operations", wr.failed());
        st.put("failed_unmap_operations", un.failed());
        st.put("failed_flush_operations", fl.failed());
        st.put("invalid_rd_operations", rd.invalid());
        st.put("invalid_wr_operations", wr.invalid());
        st.put("invalid_unmap_operations", un.invalid());
        st.put("invalid_flush_operations", fl.invalid());
        st.put("account_invalid", stats.accountInvalid());
        st.put("account_failed", stats.accountFailed());
    }
}
