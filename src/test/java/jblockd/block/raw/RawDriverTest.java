package jblockd.block.raw;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.Allocation;
import jblockd.block.BlockDriverContract;
import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.BlockdevRef;
import jblockd.block.DriverRegistry;
import jblockd.block.Errno;
import jblockd.block.Extent;
import jblockd.block.ImageCreator;
import jblockd.block.IoError;
import jblockd.block.NodeGraph;

class RawDriverTest {
    private static final long WINDOW_OFFSET = 1 << 20;
    private static final byte OUTSIDE = (byte) 0xAA;

    static BlockdevOptions raw(Path img, Long offset, Long size) {
        BlockdevOptions.Common c = BlockdevOptions.Common.defaults();
        return new BlockdevOptions.Raw(c, new BlockdevRef.Inline(new BlockdevOptions.File(c, img.toString())),
                offset, size);
    }

    @Nested
    class Plain extends BlockDriverContract {
        @Override
        protected BlockNode open(Path dir, long size) throws IOException {
            Path img = dir.resolve("plain.raw");
            NodeGraph graph = new NodeGraph(DriverRegistry.standard());
            graph.drivers().creator("raw").orElseThrow().create(ImageCreator.Options.of(img, size));
            BlockNode n = graph.add(raw(img, null, null));
            assertThat(n.driver().formatName()).isEqualTo("raw");
            return n;
        }
    }

    /** A window in the middle of a file whose other bytes are 0xAA; they must never change. */
    @Nested
    class Window extends BlockDriverContract {
        private Path img;
        private long fileSize;

        @Override
        protected BlockNode open(Path dir, long size) throws IOException {
            img = dir.resolve("window.raw");
            fileSize = WINDOW_OFFSET + size + 12345;
            byte[] outside = new byte[(int) fileSize];
            Arrays.fill(outside, OUTSIDE);
            Arrays.fill(outside, (int) WINDOW_OFFSET, (int) (WINDOW_OFFSET + size), (byte) 0);
            Files.write(img, outside);
            NodeGraph graph = new NodeGraph(DriverRegistry.standard());
            return graph.add(raw(img, WINDOW_OFFSET, size));
        }

        @AfterEach
        void bytesOutsideTheWindowAreUntouched() throws IOException {
            byte[] all = Files.readAllBytes(img);
            assertThat(all.length).isEqualTo(fileSize);
            for (int i = 0; i < all.length; i++) {
                if (i == WINDOW_OFFSET) {
                    i = all.length - 12345;
                }
                if (all[i] != OUTSIDE) {
                    throw new AssertionError("byte " + i + " outside the window changed");
                }
            }
        }
    }

    @TempDir
    Path dir;

    @Test
    void windowMapsGuestOffsetsToFileOffsetsAndShiftsStatus() throws Exception {
        Path img = dir.resolve("w.raw");
        DriverRegistry.standard().creator("raw").orElseThrow().create(ImageCreator.Options.of(img, 8L << 20));
        NodeGraph graph = new NodeGraph(DriverRegistry.standard());
        BlockNode n = graph.add(raw(img, 2L << 20, 4L << 20));
        assertThat(n.length()).isEqualTo(4L << 20);
        n.write(4096, ByteBuffer.wrap(new byte[] {1, 2, 3}), false);
        byte[] file = Files.readAllBytes(img);
        assertThat(Arrays.copyOfRange(file, (2 << 20) + 4096, (2 << 20) + 4099)).containsExactly(1, 2, 3);
        // status of the window is the file's status shifted by the offset
        assertThat(n.status(0, 4L << 20)).isEqualTo(new Extent(0, 4096, Allocation.ZERO));
        assertThat(n.status(4096, 100).allocation()).isEqualTo(Allocation.DATA);
        assertThatThrownBy(() -> n.read(4L << 20, ByteBuffer.allocate(1)))
                .isInstanceOfSatisfying(IoError.class, e -> assertThat(e.errno()).isEqualTo(Errno.EINVAL));
        graph.closeAll();
    }

    @Test
    void windowIsValidatedAgainstTheFileWithQemusMessages() throws Exception {
        Path img = dir.resolve("v.raw");
        DriverRegistry.standard().creator("raw").orElseThrow().create(ImageCreator.Options.of(img, 1 << 20));
        NodeGraph graph = new NodeGraph(DriverRegistry.standard());
        assertThatThrownBy(() -> graph.add(raw(img, 2L << 20, null)))
                .hasMessage("Offset (2097152) cannot be greater than size of the containing file (1048576)");
        assertThatThrownBy(() -> graph.add(raw(img, 512L, 1L << 20)))
                .hasMessage("The sum of offset (512) and size (1048576) has to be smaller or equal to the "
                        + " actual size of the containing file (1048576)");
        assertThatThrownBy(() -> graph.add(raw(img, 0L, 1000L)))
                .hasMessage("Specified size is not multiple of 512");
        assertThat(graph.nodes()).as("failed adds leave nothing behind").isEmpty();
        BlockNode n = graph.add(raw(img, 512L, null));
        assertThat(n.length()).isEqualTo((1 << 20) - 512);
        graph.closeAll();
    }

    @Test
    void readOnlyRawOverReadOnlyFileAndRefusalOverItWhenWritable() throws Exception {
        Path img = dir.resolve("r.raw");
        DriverRegistry.standard().creator("raw").orElseThrow().create(ImageCreator.Options.of(img, 1 << 20));
        NodeGraph graph = new NodeGraph(DriverRegistry.standard());
        BlockdevOptions.Common ro = BlockdevOptions.Common.defaults().withReadOnly(true);
        graph.add(new BlockdevOptions.File(ro.withNodeName("f"), img.toString()));
        BlockNode r = graph.add(new BlockdevOptions.Raw(ro, new BlockdevRef.Reference("f"), null, null));
        assertThat(r.readOnly()).isTrue();
        assertThatThrownBy(() -> graph.add(new BlockdevOptions.Raw(BlockdevOptions.Common.defaults(),
                new BlockdevRef.Reference("f"), null, null)))
                .isInstanceOfSatisfying(IoError.class, e -> assertThat(e.errno()).isEqualTo(Errno.EPERM))
                .hasMessage("Block node is read-only");
        graph.closeAll();
    }

    @Test
    void imageOptionsOpensRawOverFileByProbe() throws Exception {
        Path img = dir.resolve("p.raw");
        DriverRegistry.standard().creator("raw").orElseThrow().create(ImageCreator.Options.of(img, 1 << 20));
        NodeGraph graph = new NodeGraph(DriverRegistry.standard());
        BlockNode n = graph.add(graph.imageOptions(img, null, false, false, "disk"));
        assertThat(n.driver().driverName()).isEqualTo("raw");
        assertThat(n.driver().filename()).isEqualTo(img.toString());
        assertThat(n.driver().children()).extracting(c -> c.role()).containsExactly("file");
        assertThat(n.length()).isEqualTo(1 << 20);
        graph.closeAll();
    }
}
