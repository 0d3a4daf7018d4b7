package jblockd.block;

import java.io.IOException;

/**
 * What a driver may ask the graph for while it opens: its children. Nodes opened through the
 * context are registered in the graph and released again if the parent fails to open.
 */
public interface OpenContext {
    /** Opens an inline child or finds a referenced node ({@code role} names it in errors). */
    BlockNode child(BlockdevRef ref, String role, boolean readOnly) throws IOException;

    /**
     * Opens an image by file name as a backing file: a file node plus a format node
     * ({@code format} null: probe), both auto-named, read-only unless told otherwise.
     */
    BlockNode openBackingImage(String filename, String format, boolean readOnly) throws IOException;

    /** The objects a node's options name (a remote node's {@code tls-creds}, an rbd {@code key-secret}). */
    default ObjectLookup objects() {
        return ObjectLookup.NONE;
    }

    /** The node of that name in the graph, if any (a driver option that names a node's bitmap). */
    default java.util.Optional<BlockNode> node(String nodeName) {
        return java.util.Optional.empty();
    }
}
