package jblockd.client;

import com.fasterxml.jackson.databind.JsonNode;

import java.util.List;

/**
 * One entry of {@code query-named-block-nodes} (BlockDeviceInfo): a node of the graph.
 * {@code virtualSize} is -1 when the daemon did not report it; {@code dirtyBitmaps} are the
 * node's bitmaps, newest first (empty when it has none).
 */
public record NodeInfo(String nodeName, String driver, String file, boolean readOnly, long virtualSize,
                       List<BitmapInfo> dirtyBitmaps, JsonNode raw) {
    static NodeInfo from(JsonNode n) {
        return new NodeInfo(n.path("node-name").asText(), n.path("drv").asText(), n.path("file").asText(""),
                n.path("ro").asBoolean(), n.path("image").path("virtual-size").asLong(-1), BitmapInfo.listOf(n), n);
    }
}
