package jblockd.client;

import jblockd.qapi.BlockdevOnError;

/**
 * Arguments of {@code block-commit}: push {@code top}'s data (default: the active layer) down
 * into {@code base}; committing the active layer goes through READY and complete.
 */
public final class BlockCommit extends JobArgs<BlockCommit> {

    private BlockCommit(String device) {
        super(device);
    }

    public static BlockCommit of(String device) {
        return new BlockCommit(device);
    }

    public BlockCommit base(String fileName) {
        return set("base", fileName);
    }

    public BlockCommit baseNode(String nodeName) {
        return set("base-node", nodeName);
    }

    public BlockCommit top(String fileName) {
        return set("top", fileName);
    }

    public BlockCommit topNode(String nodeName) {
        return set("top-node", nodeName);
    }

    public BlockCommit backingFile(String name) {
        return set("backing-file", name);
    }

    public BlockCommit onError(BlockdevOnError action) {
        return set("on-error", action);
    }
}
