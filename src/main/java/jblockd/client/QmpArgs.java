package jblockd.client;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.LinkedHashMap;
import java.util.Map;
import jblockd.qapi.WireEnum;

/**
 * Base of the fluent argument builders: members by their QAPI (wire) name, in the order they
 * were set; enums by their wire string; a member set to null is left out.
 *
 * @param <T> the concrete builder, returned by the setters
 */
public abstract class QmpArgs<T extends QmpArgs<T>> {
    private final Map<String, Object> members = new LinkedHashMap<>();

    protected QmpArgs() {
    }

    /** Sets any member by its wire name: for arguments this builder has no setter for. */
    public T set(String wireName, Object value) {
        if (value == null) {
            members.remove(wireName);
        } else {
            members.put(wireName, value instanceof WireEnum w ? w.wire() : value);
        }
        @SuppressWarnings("unchecked")
        T self = (T) this;
        return self;
    }

    /** A member's value as set (enums as wire strings), or null. */
    public Object get(String wireName) {
        return members.get(wireName);
    }

    /** The {@code arguments} object. */
    public ObjectNode toJson() {
        ObjectNode o = QmpConnection.MAPPER.createObjectNode();
        for (Map.Entry<String, Object> e : members.entrySet()) {
            Object v = e.getValue();
            o.set(e.getKey(), v instanceof JsonNode j ? j : QmpConnection.MAPPER.valueToTree(v));
        }
        return o;
    }

    @Override
    public String toString() {
        return toJson().toString();
    }
}
