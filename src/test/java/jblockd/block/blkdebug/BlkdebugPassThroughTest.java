package jblockd.block.blkdebug;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;

import jblockd.block.BlockDriverContract;
import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.BlockdevRef;
import jblockd.block.DriverRegistry;
import jblockd.block.ImageCreator;
import jblockd.block.NodeGraph;

/** blkdebug without rules is a transparent filter over its file child (growable, like the file). */
class BlkdebugPassThroughTest extends BlockDriverContract {
    @Override
    protected BlockNode open(Path dir, long size) throws IOException {
        Path img = dir.resolve("pass.raw");
        NodeGraph graph = new NodeGraph(DriverRegistry.standard());
        graph.drivers().creator("raw").orElseThrow().create(ImageCreator.Options.of(img, size));
        BlockdevOptions.Common c = BlockdevOptions.Common.defaults();
        BlockNode n = graph.add(new BlockdevOptions.Blkdebug(c,
                new BlockdevRef.Inline(new BlockdevOptions.File(c, img.toString())), null, List.of(), null));
        assertThat(n.driver().filename()).isEqualTo("blkdebug::" + img);
        return n;
    }
}
