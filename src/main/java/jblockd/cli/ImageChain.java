package jblockd.cli;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.BlockdevRef;
import jblockd.block.DriverRegistry;
import jblockd.block.NodeGraph;

/** A qcow2 backup chain as its images name it: the file, its backing file, and so on down. */
final class ImageChain {
    private ImageChain() {
    }

    /** The chain of an image open in this process (its backing files opened with it). */
    static List<String> of(BlockNode top) {
        List<String> names = new ArrayList<>();
        for (BlockNode at = top; at != null; at = at.driver().backing()) {
            names.add(at.driver().filename());
        }
        return names;
    }

    /** Opens {@code qcow2} read-only with its backing chain and lists it. */
    static List<String> of(Path qcow2) throws IOException {
        NodeGraph graph = new NodeGraph(DriverRegistry.standard());
        try {
            BlockdevOptions.Common ro = BlockdevOptions.Common.defaults().withReadOnly(true);
            return of(graph.add(new BlockdevOptions.Qcow2(ro.withNodeName("chain"),
                    new BlockdevRef.Inline(new BlockdevOptions.File(ro.withNodeName("chain-file"), qcow2.toString())),
                    null)));
        } finally {
            graph.closeAll();
        }
    }
}
