package jblockd.client;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.List;
import jblockd.qapi.IoStatus;

/**
 * One entry of {@code query-block}: a device (drive) and what is inserted in it.
 * {@code nodeName}, {@code driver}, {@code file}, {@code virtualSize} describe the root node
 * (null / -1 when nothing is inserted); {@code ioStatus} is null when the device does not track
 * it. {@code dirtyBitmaps} are the inserted node's bitmaps, newest first (empty when none).
 * {@code raw} is the entry as received.
 */
public record BlockInfo(String device, String nodeName, String driver, String file, boolean readOnly,
                        long virtualSize, IoStatus ioStatus, List<BitmapInfo> dirtyBitmaps, JsonNode raw) {
    static BlockInfo from(JsonNode n) {
        JsonNode ins = n.path("inserted");
        boolean present = ins.isObject();
        return new BlockInfo(n.path("device").asText(),
                present ? ins.path("node-name").asText(null) : null,
                present ? ins.path("drv").asText(null) : null,
                present ? ins.path("file").asText(null) : null,
                present && ins.path("ro").asBoolean(),
                present ? ins.path("image").path("virtual-size").asLong(-1) : -1,
                n.has("io-status") ? IoStatus.fromWire(n.path("io-status").asText()) : null,
                present ? BitmapInfo.listOf(ins) : List.of(), n);
    }
}
