package jblockd.block.nullco;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;

import jblockd.block.Allocation;
import jblockd.block.BlockDriverContract;
import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.DriverRegistry;
import jblockd.block.Extent;
import jblockd.block.NodeGraph;

class NullCoTest extends BlockDriverContract {
    @Override
    protected BlockNode open(Path dir, long size) throws IOException {
        return new NodeGraph(DriverRegistry.standard())
                .add(new BlockdevOptions.NullCo(BlockdevOptions.Common.defaults(), size, true));
    }

    @Override
    protected boolean storesData() {
        return false;
    }

    @Test
    void writesAreDroppedAndStatusFollowsReadZeroes() throws IOException {
        NodeGraph g = new NodeGraph(DriverRegistry.standard());
        BlockNode zero = g.add(new BlockdevOptions.NullCo(BlockdevOptions.Common.defaults(), 1 << 20, true));
        BlockNode data = g.add(new BlockdevOptions.NullCo(BlockdevOptions.Common.defaults(), 1 << 20, false));
        zero.write(0, ByteBuffer.wrap(new byte[] {1, 2, 3}), true);
        ByteBuffer back = ByteBuffer.allocate(3);
        zero.read(0, back);
        assertThat(back.array()).containsOnly((byte) 0);
        assertThat(zero.status(0, 1 << 20)).isEqualTo(new Extent(0, 1 << 20, Allocation.ZERO));
        assertThat(data.status(0, 1 << 20)).isEqualTo(new Extent(0, 1 << 20, Allocation.DATA));
        assertThat(zero.driver().filename()).isEqualTo("null-co://");
        g.closeAll();
    }

    /** Observed from QEMU 7.2 query-named-block-nodes for the same -blockdev options. */
    @Test
    void filenameIsJsonWhenStrongOptionsWereGiven() {
        BlockdevOptions.Common c = BlockdevOptions.Common.defaults();
        assertThat(NullCoDriver.filename(new BlockdevOptions.NullCo(c, 1 << 30, false, false, false)))
                .isEqualTo("null-co://");
        assertThat(NullCoDriver.filename(new BlockdevOptions.NullCo(c, 1 << 30, true, false, true)))
                .isEqualTo("json:{\"read-zeroes\": true, \"driver\": \"null-co\"}");
        assertThat(NullCoDriver.filename(new BlockdevOptions.NullCo(c, 4096, false, true, true)))
                .isEqualTo("json:{\"read-zeroes\": false, \"driver\": \"null-co\", \"size\": 4096}");
        assertThat(NullCoDriver.filename(new BlockdevOptions.NullCo(c, 1048576, false, true, false)))
                .isEqualTo("json:{\"driver\": \"null-co\", \"size\": 1048576}");
    }
}
