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

    /** block.c naming order: file child, then the format node, then its backing chain; blkdebug first. */
    @Test
    void namingOrderIsQemusNotTheOpeningOrder() throws Exception {
        Path base = dir.resolve("base.qcow2");
        Path top = dir.resolve("top.qcow2");
        NodeGraph graph = new NodeGraph(DriverRegistry.standard());
        ImageCreator qcow2 = graph.drivers().creator("qcow2").orElseThrow();
        qcow2.create(ImageCreator.Options.of(base, 1 << 20));
        qcow2.create(new ImageCreator.Options(top, 1 << 20, base.toString(), "qcow2", 0, false));
        BlockdevOptions.Common c = BlockdevOptions.Common.defaults();
        graph.add(new BlockdevOptions.Blkdebug(c.withNodeName("dbg"), new BlockdevRef.Inline(
                new BlockdevOptions.Qcow2(c.withNodeName("top"), new BlockdevRef.Inline(
                        new BlockdevOptions.File(c.withNodeName("topf"), top.toString())), null)), null, null, null));
        assertThat(graph.nodesInNamingOrder().stream().map(n -> n.driver().driverName() + ":"
                + (n.autoNamed() ? "auto" : n.nodeName())).toList())
                .containsExactly("blkdebug:dbg", "file:topf", "qcow2:top", "file:auto", "qcow2:auto");
        // children first, as closeAll relies on
        assertThat(graph.nodes().stream().map(BlockNode::nodeName).toList().getLast()).isEqualTo("dbg");
        graph.closeAll();
    }
}
