package jblockd.client;

import com.fasterxml.jackson.databind.JsonNode;

/** One entry of {@code query-block-exports}: {@code {id, type, node-name, shutting-down}}. */
public record ExportInfo(String id, String type, String nodeName, boolean shuttingDown) {
    static ExportInfo from(JsonNode n) {
        return new ExportInfo(n.path("id").asText(), n.path("type").asText(), n.path("node-name").asText(),
                n.path("shutting-down").asBoolean());
    }
}
