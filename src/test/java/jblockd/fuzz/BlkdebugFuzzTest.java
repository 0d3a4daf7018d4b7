package jblockd.fuzz;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.io.TempDir;

import com.code_intelligence.jazzer.junit.FuzzTest;

import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.BlockdevRef;
import jblockd.block.DriverRegistry;
import jblockd.block.ImageCreator;
import jblockd.block.IoError;
import jblockd.block.NodeGraph;

/**
 * blkdebug's config file ({@code config=FILE}, QEMU's blkdebug.c format): the input is the file;
 * a blkdebug node over a real raw image is opened with it through the node graph, then read,
 * written, flushed and discarded once each, so parsed rules fire. Invariants: open either works
 * or fails with an IoError that carries an errno and a message; every request either works or
 * fails with an IoError (an injected errno is still an IoError); the node closes; bounded time.
 * Seeds: configs from QEMU's iotests style (BlkdebugFuzzTestInputs).
 */
class BlkdebugFuzzTest {
    private static final int MIB = 1 << 20;

    @TempDir
    static Path dir;
    private static NodeGraph graph;
    private static Path image;

    @BeforeAll
    static void image() throws IOException {
        graph = new NodeGraph(DriverRegistry.standard());
        image = dir.resolve("disk.raw");
        graph.drivers().creator("raw").orElseThrow().create(ImageCreator.Options.of(image, MIB));
    }

    @AfterAll
    static void close() {
        graph.closeAll();
    }

    @FuzzTest
    void config(byte[] input) throws Exception {
        Path cfg = dir.resolve("blkdebug.conf");
        Files.write(cfg, input);
        FuzzChecks.bounded(input.length, () -> {
            BlockdevOptions.Common c = new BlockdevOptions.Common(null, false, false, false, true);
            BlockNode node;
            try {
                node = graph.add(new BlockdevOptions.Blkdebug(c,
                        new BlockdevRef.Inline(new BlockdevOptions.File(c, image.toString())), cfg.toString(),
                        null, null));
            } catch (IoError e) {
                assertClear(e);
                return;
            }
            try {
                request(() -> node.read(0, ByteBuffer.allocate(4096)));
                request(() -> node.write(4096, ByteBuffer.allocate(512), false));
                request(node::flush);
                request(() -> node.discard(8192, 4096));
                request(() -> node.read(512, ByteBuffer.allocate(512)));
            } finally {
                graph.remove(node);
            }
        });
    }

    private interface Request {
        void run() throws IOException;
    }

    private static void request(Request r) {
        try {
            r.run();
        } catch (IoError e) {
            assertClear(e);
        } catch (IOException e) {
            throw new AssertionError("not an IoError", e);
        }
    }

    private static void assertClear(IoError e) {
        assertThat(e.errno()).isNotNull();
        assertThat(e.getMessage()).isNotBlank();
    }
}
