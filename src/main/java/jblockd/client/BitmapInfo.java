package jblockd.client;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.ArrayList;
import java.util.List;

/**
 * One entry of a node's {@code dirty-bitmaps} (qapi BlockDirtyInfo). {@code name} is null for
 * an anonymous bitmap (a job's successor or copy bitmap); {@code count} is in bytes: set bits
 * times the granularity. {@code busy}: frozen by a job or exported; {@code inconsistent}: loaded
 * from an image with {@code in_use} set, usable only for removal.
 */
public record BitmapInfo(String name, boolean recording, boolean persistent, boolean busy, long granularity,
                         long count, boolean inconsistent) {
    static BitmapInfo from(JsonNode n) {
        return new BitmapInfo(n.has("name") ? n.get("name").asText() : null, n.path("recording").asBoolean(),
                n.path("persistent").asBoolean(), n.path("busy").asBoolean(), n.path("granularity").asLong(),
                n.path("count").asLong(), n.path("inconsistent").asBoolean(false));
    }

    /** The list of a BlockDeviceInfo's {@code dirty-bitmaps} member (absent: empty). */
    static List<BitmapInfo> listOf(JsonNode deviceInfo) {
        List<BitmapInfo> out = new ArrayList<>();
        for (JsonNode b : deviceInfo.path("dirty-bitmaps")) {
            out.add(from(b));
        }
        return List.copyOf(out);
    }
}
