package jblockd.bench;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;

import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Threads;
import org.openjdk.jmh.annotations.Warmup;
import org.openjdk.jmh.runner.Runner;
import org.openjdk.jmh.runner.options.OptionsBuilder;

import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.BlockdevRef;
import jblockd.block.DriverRegistry;
import jblockd.block.NodeGraph;
import jblockd.block.bitmap.BitmapException;

/**
 * The cost of dirty-bitmap tracking on the write path (issue 13: 4 KiB random writes with two
 * enabled bitmaps must keep at least 0.95x the IOPS without): {@code BlockNode.write} of 4 KiB
 * at random 4 KiB-aligned offsets of a 1 GiB node, from two threads, with 0 or 2 enabled
 * bitmaps (64 KiB and 4 KiB granularity, the default and a fine one). Backends: {@code null-co}
 * (no I/O at all: the bare overhead of the node and its marks, the worst case for the ratio)
 * and {@code file} (a raw node over a sparse file in the page cache, the cheapest real I/O).
 * Run: {@code java -cp target/test-classes:target/classes:DEPS jblockd.bench.BitmapMarkBench}
 * (DEPS: the test classpath, e.g. from {@code ./mvnw dependency:build-classpath}); any JMH
 * options may follow, e.g. {@code -p backend=file}. Not a unit test.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.Throughput)
@OutputTimeUnit(TimeUnit.SECONDS)
@Warmup(iterations = 3, time = 2)
@Measurement(iterations = 5, time = 2)
@Fork(value = 1, jvmArgsAppend = "--enable-native-access=ALL-UNNAMED")
@Threads(2)
public class BitmapMarkBench {
    private static final long SIZE = 1L << 30;
    private static final int BLOCK = 4096;

    @Param({"0", "2"})
    public int bitmaps;

    @Param({"null-co", "file"})
    public String backend;

    private NodeGraph graph;
    private BlockNode node;
    private Path file;

    @Setup(Level.Trial)
    public void open() throws IOException, BitmapException {
        graph = new NodeGraph(DriverRegistry.standard());
        BlockdevOptions.Common c = new BlockdevOptions.Common(null, false, false, false, false);
        if (backend.equals("null-co")) {
            node = graph.add(new BlockdevOptions.NullCo(c, SIZE, false, true, true));
        } else {
            file = Files.createTempFile("bitmap-bench", ".raw");
            try (var ch = java.nio.channels.FileChannel.open(file, java.nio.file.StandardOpenOption.WRITE)) {
                ch.truncate(SIZE);
                ch.write(ByteBuffer.allocate(1), SIZE - 1);
            }
            node = graph.add(new BlockdevOptions.Raw(c, new BlockdevRef.Inline(new BlockdevOptions.File(c,
                    file.toString())), null, null));
        }
        if (bitmaps >= 1) {
            node.bitmaps().create("b0", 65536, false, false, node.nodeName());
        }
        if (bitmaps >= 2) {
            node.bitmaps().create("b1", 4096, false, false, node.nodeName());
        }
    }

    @TearDown(Level.Trial)
    public void close() throws IOException {
        graph.closeAll();
        if (file != null) {
            Files.deleteIfExists(file);
        }
    }

    /** Each thread's own aligned buffer. */
    @State(Scope.Thread)
    public static class Buffer {
        final ByteBuffer buf = ByteBuffer.allocateDirect(2 * BLOCK).alignedSlice(BLOCK);
    }

    @Benchmark
    public void write4k(Buffer b) throws IOException {
        long offset = ThreadLocalRandom.current().nextLong(SIZE / BLOCK) * BLOCK;
        b.buf.clear().limit(BLOCK);
        node.write(offset, b.buf, false);
    }

    public static void main(String[] args) throws Exception {
        if (args.length > 0) {
            org.openjdk.jmh.Main.main(args);
            return;
        }
        new Runner(new OptionsBuilder().include(BitmapMarkBench.class.getSimpleName()).build()).run();
    }
}
