package jblockd.client;

import java.util.Objects;

/**
 * A source of {@code block-dirty-bitmap-merge}: a bitmap of the target's node ({@link #local})
 * or of another node ({@link #on}), QAPI's BlockDirtyBitmapOrStr; also a bitmap of an NBD export
 * ({@link ExportCommands#blockExportAdd(String, String, String, boolean, java.util.List, boolean)}).
 *
 * @param node null for a bitmap of the target's (or exported) node
 */
public record BitmapRef(String node, String name) {
    public BitmapRef {
        Objects.requireNonNull(name);
    }

    public static BitmapRef local(String name) {
        return new BitmapRef(null, name);
    }

    public static BitmapRef on(String node, String name) {
        return new BitmapRef(Objects.requireNonNull(node), name);
    }

    /** The wire form: the name alone, or {@code {"node", "name"}}. */
    Object toWire() {
        return node == null ? name
                : QmpConnection.MAPPER.createObjectNode().put("node", node).put("name", name);
    }
}
