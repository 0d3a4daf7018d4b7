package jblockd.client;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The dirty-bitmap commands: {@code block-dirty-bitmap-add}, {@code -remove}, {@code -clear},
 * {@code -enable}, {@code -disable}, {@code -merge}, {@code x-debug-block-dirty-bitmap-sha256},
 * and the {@code dirty-bitmaps} of the node queries. Obtained from {@link QmpClient#bitmaps()}.
 * {@code node} may be a node name or a device name (its root node). Refusals throw
 * {@link QmpException} with the daemon's text (QEMU's, e.g. "Dirty bitmap 'b0' not found").
 */
public final class BitmapCommands {
    private final QmpClient qmp;

    BitmapCommands(QmpClient qmp) {
        this.qmp = qmp;
    }

    /** A new enabled bitmap with the default granularity. */
    public void add(String node, String name) {
        add(BitmapAdd.of(node, name));
    }

    public void add(BitmapAdd args) {
        qmp.execute("block-dirty-bitmap-add", args);
    }

    /** Removes the bitmap (a persistent one from the image too, at once). */
    public void remove(String node, String name) {
        qmp.execute("block-dirty-bitmap-remove", ref(node, name));
    }

    /** Clears every bit. */
    public void clear(String node, String name) {
        qmp.execute("block-dirty-bitmap-clear", ref(node, name));
    }

    public void enable(String node, String name) {
        qmp.execute("block-dirty-bitmap-enable", ref(node, name));
    }

    public void disable(String node, String name) {
        qmp.execute("block-dirty-bitmap-disable", ref(node, name));
    }

    /** ORs every source into {@code target} (a bitmap of {@code node}); all or nothing. */
    public void merge(String node, String target, List<BitmapRef> sources) {
        ObjectNode a = QmpConnection.MAPPER.createObjectNode().put("node", node).put("target", target);
        ArrayNode list = a.putArray("bitmaps");
        for (BitmapRef s : sources) {
            list.add(QmpConnection.MAPPER.valueToTree(s.toWire()));
        }
        qmp.execute("block-dirty-bitmap-merge", a);
    }

    public void merge(String node, String target, BitmapRef... sources) {
        merge(node, target, List.of(sources));
    }

    /** {@code x-debug-block-dirty-bitmap-sha256}: a hash of the bits, for comparing two bitmaps. */
    public String sha256(String node, String name) {
        return qmp.execute("x-debug-block-dirty-bitmap-sha256", ref(node, name)).path("sha256").asText();
    }

    /**
     * The bitmaps of every node that has some, by node name, in query-named-block-nodes' order;
     * each node's list newest first.
     */
    public Map<String, List<BitmapInfo>> list() {
        Map<String, List<BitmapInfo>> out = new LinkedHashMap<>();
        for (NodeInfo n : qmp.block().queryNamedBlockNodes()) {
            if (!n.dirtyBitmaps().isEmpty()) {
                out.put(n.nodeName(), n.dirtyBitmaps());
            }
        }
        return out;
    }

    /**
     * The bitmaps of one node (a node name, or a device name for its inserted node), newest
     * first; empty when it has none.
     *
     * @throws IllegalArgumentException when there is no such node or device
     */
    public List<BitmapInfo> of(String nodeOrDevice) {
        for (NodeInfo n : qmp.block().queryNamedBlockNodes()) {
            if (n.nodeName().equals(nodeOrDevice)) {
                return n.dirtyBitmaps();
            }
        }
        for (BlockInfo b : qmp.block().queryBlock()) {
            if (b.device().equals(nodeOrDevice)) {
                return b.dirtyBitmaps();
            }
        }
        throw new IllegalArgumentException("no node or device '" + nodeOrDevice + "'");
    }

    private static JsonNode ref(String node, String name) {
        return QmpConnection.MAPPER.createObjectNode().put("node", node).put("name", name);
    }
}
