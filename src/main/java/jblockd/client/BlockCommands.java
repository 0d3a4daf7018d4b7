package jblockd.client;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.ArrayList;
import java.util.List;

/** The block graph commands of SPEC §3 ("graph"). Obtained from {@link QmpClient#block()}. */
public final class BlockCommands {
    private final QmpClient qmp;

    BlockCommands(QmpClient qmp) {
        this.qmp = qmp;
    }

    /** {@code blockdev-add} with options built by {@link Blockdev}. */
    public void blockdevAdd(Blockdev options) {
        qmp.execute("blockdev-add", options);
    }

    /** {@code blockdev-add} with options as a JSON object or a Map (BlockdevOptions). */
    public void blockdevAdd(Object options) {
        qmp.execute("blockdev-add", options);
    }

    /** {@code blockdev-del}: removes a node nobody uses. */
    public void blockdevDel(String nodeName) {
        qmp.execute("blockdev-del", QmpConnection.MAPPER.createObjectNode().put("node-name", nodeName));
    }

    /**
     * {@code blockdev-reopen}: each node with its whole new option set (an option left out goes
     * back to its default; a child by reference to the child it has keeps its options), all
     * reopened together or none, e.g. read-only on or off.
     */
    public void blockdevReopen(Blockdev... options) {
        var list = QmpConnection.MAPPER.createArrayNode();
        for (Blockdev o : options) {
            list.add(o.toJson());
        }
        ObjectNode args = QmpConnection.MAPPER.createObjectNode();
        args.set("options", list);
        qmp.execute("blockdev-reopen", args);
    }

    /**
     * {@code blockdev-snapshot}: puts the node {@code overlay} (added with {@code backing: null})
     * on top of {@code node}; the devices and exports on {@code node} move to it.
     */
    public void blockdevSnapshot(String node, String overlay) {
        qmp.execute("blockdev-snapshot", QmpConnection.MAPPER.createObjectNode().put("node", node)
                .put("overlay", overlay));
    }

    /** {@code blockdev-snapshot-sync}: creates the overlay image and puts it on top. */
    public void blockdevSnapshotSync(BlockdevSnapshotSync args) {
        qmp.execute("blockdev-snapshot-sync", args);
    }

    /**
     * {@code change-backing-file}: rewrites the backing file name in the header of
     * {@code imageNodeName}, a node in the chain of {@code device} (a root node or device).
     */
    public void changeBackingFile(String device, String imageNodeName, String backingFile) {
        qmp.execute("change-backing-file", QmpConnection.MAPPER.createObjectNode().put("device", device)
                .put("image-node-name", imageNodeName).put("backing-file", backingFile));
    }

    /** {@code query-block}: the devices. */
    public List<BlockInfo> queryBlock() {
        List<BlockInfo> out = new ArrayList<>();
        for (JsonNode n : qmp.execute("query-block", null)) {
            out.add(BlockInfo.from(n));
        }
        return out;
    }

    /** {@code query-named-block-nodes}: every named node. */
    public List<NodeInfo> queryNamedBlockNodes() {
        List<NodeInfo> out = new ArrayList<>();
        for (JsonNode n : qmp.execute("query-named-block-nodes", null)) {
            out.add(NodeInfo.from(n));
        }
        return out;
    }
}
