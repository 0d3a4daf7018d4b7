package jblockd.daemon;

import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

/**
 * {@code --nbd-server addr.type=inet,addr.host=H,addr.port=P} uses the flat SocketAddress
 * (qemu-storage-daemon's NbdServerOptions) while the QMP command nbd-server-start takes
 * SocketAddressLegacy ({@code addr: {type, data: {...}}}); this converts the former into the
 * latter when needed.
 */
final class NbdAddressCompat {
    private NbdAddressCompat() {
    }

    static JsonNode toLegacy(JsonNode args) {
        if (!(args instanceof ObjectNode o) || !(o.get("addr") instanceof ObjectNode addr)
                || addr.has("data") || !addr.has("type")) {
            return args;
        }
        ObjectNode copy = o.deepCopy();
        ObjectNode legacy = copy.putObject("addr");
        legacy.set("type", addr.get("type"));
        ObjectNode data = legacy.putObject("data");
        for (Map.Entry<String, JsonNode> e : addr.properties()) {
            if (!e.getKey().equals("type")) {
                data.set(e.getKey(), e.getValue());
            }
        }
        return copy;
    }
}
