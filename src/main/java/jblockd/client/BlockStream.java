package jblockd.client;

import jblockd.qapi.BlockdevOnError;

/**
 * Arguments of {@code block-stream}: pull the backing chain's data into {@code device}'s top
 * image, then drop the backing link (or rebase onto {@code base}/{@code base-node}).
 */
public final class BlockStream extends JobArgs<BlockStream> {

    private BlockStream(String device) {
        super(device);
    }

    public static BlockStream of(String device) {
        return new BlockStream(device);
    }

    /** Base image by file name. */
    public BlockStream base(String fileName) {
        return set("base", fileName);
    }

    public BlockStream baseNode(String nodeName) {
        return set("base-node", nodeName);
    }

    public BlockStream backingFile(String name) {
        return set("backing-file", name);
    }

    public BlockStream onError(BlockdevOnError action) {
        return set("on-error", action);
    }
}
