package jblockd.client;

import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;

/**
 * A device or node name as the commands that take either resolve it: a device (query-block),
 * else a node (query-named-block-nodes), with the node it stands for and its virtual size.
 */
public final class NodeLookup {
    /** The node a name stands for and its size in bytes. */
    public record Found(String node, long size) {
    }

    private NodeLookup() {
    }

    /** @throws DeviceNotFoundException when the daemon has no such device or node (QEMU's words) */
    public static Found resolve(QmpClient qmp, String deviceOrNode) {
        for (JsonNode b : qmp.execute("query-block", null)) {
            if (b.has("inserted") && (b.path("device").asText().equals(deviceOrNode)
                    || b.path("qdev").asText().equals(deviceOrNode))) {
                return new Found(b.at("/inserted/node-name").asText(), b.at("/inserted/image/virtual-size").asLong());
            }
        }
        for (JsonNode n : qmp.execute("query-named-block-nodes", Map.of("flat", true))) {
            if (n.path("node-name").asText().equals(deviceOrNode)) {
                return new Found(deviceOrNode, n.at("/image/virtual-size").asLong());
            }
        }
        throw new DeviceNotFoundException("Cannot find device='" + deviceOrNode + "' nor node-name='" + deviceOrNode
                + "'", "query-named-block-nodes");
    }
}
