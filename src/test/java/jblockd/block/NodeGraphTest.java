package jblockd.block;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class NodeGraphTest {
    @TempDir
    Path dir;

    @Test
    void rawImageOpensWithAutoNamedFileChildAndRoundTripsData() throws Exception {
        Path img = dir.resolve("a.raw");
        NodeGraph graph = new NodeGraph(DriverRegistry.standard());
        graph.drivers().creator("raw").orElseThrow().create(ImageCreator.Options.of(img, 1 << 20));
        BlockNode file = graph.add(new BlockdevOptions.File(BlockdevOptions.Common.defaults().withNodeName("f0"),
                img.toString()));
        assertThat(file.nodeName()).isEqualTo("f0");
        assertThat(file.length()).isEqualTo(1 << 20);

        file.write(4096, ByteBuffer.wrap("hello".getBytes(StandardCharsets.US_ASCII)), false);
        ByteBuffer back = ByteBuffer.allocate(5);
        file.read(4096, back);
        assertThat(new String(back.array(), StandardCharsets.US_ASCII)).isEqualTo("hello");
        assertThat(Files.size(img)).isEqualTo(1 << 20);
    }

    @Test
    void duplicateNodeNameIsRefusedAndLeavesTheFirstNodeIntact() throws Exception {
        Path img = dir.resolve("b.raw");
        NodeGraph graph = new NodeGraph(DriverRegistry.standard());
        graph.drivers().creator("raw").orElseThrow().create(ImageCreator.Options.of(img, 65536));
        BlockdevOptions o = new BlockdevOptions.File(BlockdevOptions.Common.defaults().withNodeName("n"), img.toString());
        BlockNode first = graph.add(o);
        assertThatThrownBy(() -> graph.add(o)).isInstanceOf(IoError.class)
                .hasMessageContaining("Duplicate nodes with node-name='n'");
        assertThat(graph.node("n")).containsSame(first);
        assertThat(first.isClosed()).isFalse();
    }

    @Test
    void missingFileIsEnoent() {
        NodeGraph graph = new NodeGraph(DriverRegistry.standard());
        assertThatThrownBy(() -> graph.add(new BlockdevOptions.File(BlockdevOptions.Common.defaults(),
                dir.resolve("nope").toString())))
                .isInstanceOfSatisfying(IoError.class, e -> assertThat(e.errno()).isEqualTo(Errno.ENOENT));
        assertThat(graph.nodes()).isEmpty();
    }
}
