package jblockd.client;

import com.fasterxml.jackson.databind.JsonNode;
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
