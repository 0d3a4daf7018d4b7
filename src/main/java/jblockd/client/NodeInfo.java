package jblockd.client;

import com.fasterxml.jackson.databind.JsonNode;

/**
 * One entry of {@code query-named-block-nodes} (BlockDeviceInfo): a node of the graph.
 * {@code virtualSize} is -1 when the daemon did not report it.
 */
public record NodeInfo(String nodeName, String driver, String file, boolean readOnly, long virtualSize,
                       JsonNode raw) {
    static NodeInfo from(JsonNode n) {
        return new NodeInfo(n.path("node-name").asText(), n.path("drv").asText(), n.path("file").asText(""),
                n.path("ro").asBoolean(), n.path("image").path("virtual-size").asLong(-1), n);
    }
}
