package jblockd.bench;

import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.BlockdevRef;
import jblockd.block.DriverRegistry;
import jblockd.block.NodeGraph;

/**
 * I/O through our {@code raw → file} nodes with the request pattern of {@code qemu-img bench}, so
 * bench/block-bench.sh can put the two side by side on the same file:
 * <pre>
 *   RawBench IMAGE read|write COUNT SIZE DEPTH STEP [direct|writeback]
 * </pre>
 * Request {@code i} goes to {@code (i * STEP) mod image size} (qemu-img bench's offset/step
 * walk, which wraps at the end of the image); DEPTH virtual threads keep DEPTH requests in
 * flight (qemu-img bench's -d). Buffers are aligned direct buffers, as QEMU's are. The default
 * cache mode is {@code direct} (O_DIRECT, like qemu-img bench -t none) so that neither side
 * measures the page cache. A short untimed warm-up (a tenth of COUNT, at most 2000 requests, on
 * the same offsets) lets the JIT compile the path first; qemu has no equivalent need.
 * Prints {@code Run completed in S seconds.} like qemu-img bench. Not a unit test.
 */
public final class RawBench {
    private RawBench() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 6) {
            System.err.println("usage: RawBench IMAGE read|write COUNT SIZE DEPTH STEP [direct|writeback]");
            System.exit(2);
        }
        Path img = Path.of(args[0]);
        boolean write = switch (args[1]) {
            case "read" -> false;
            case "write" -> true;
            default -> throw new IllegalArgumentException("read or write, not " + args[1]);
        };
        long count = Long.parseLong(args[2]);
        int size = Integer.parseInt(args[3]);
        int depth = Integer.parseInt(args[4]);
        long step = Long.parseLong(args[5]);
        boolean direct = args.length < 7 || args[6].equals("direct");

        NodeGraph graph = new NodeGraph(DriverRegistry.standard());
        try {
            BlockdevOptions.Common c = new BlockdevOptions.Common(null, !write, direct, false, false);
            BlockNode node = graph.add(new BlockdevOptions.Raw(c,
                    new BlockdevRef.Inline(new BlockdevOptions.File(c, img.toString())), null, null));
            long imageSize = node.length();
            run(node, write, Math.min(count / 10, 2000), size, depth, step, imageSize);
            long t0 = System.nanoTime();
            run(node, write, count, size, depth, step, imageSize);
            if (write) {
                node.flush(); // qemu-img bench drains; with O_DIRECT the data is on the device already
            }
            double secs = (System.nanoTime() - t0) / 1e9;
            System.out.printf(Locale.ROOT, "Sending %d %s requests, %d bytes each, %d in parallel (step %d, %s)%n",
                    count, write ? "write" : "read", size, depth, step, direct ? "O_DIRECT" : "page cache");
            System.out.printf(Locale.ROOT, "Run completed in %.3f seconds.%n", secs);
        } finally {
            graph.closeAll();
        }
    }

    private static void run(BlockNode node, boolean write, long count, int size, int depth, long step,
                            long imageSize) throws Exception {
        AtomicLong next = new AtomicLong();
        AtomicReference<Throwable> failure = new AtomicReference<>();
        List<Thread> workers = new ArrayList<>();
        for (int w = 0; w < depth; w++) {
            workers.add(Thread.ofVirtual().name("bench-" + w).start(() -> {
                ByteBuffer buf = ByteBuffer.allocateDirect(size + 4096).alignedSlice(4096);
                for (int i = 0; i < size; i++) {
                    buf.put(i, (byte) (i * 31 + 7));
                }
                try {
                    for (long i = next.getAndIncrement(); i < count && failure.get() == null;
                         i = next.getAndIncrement()) {
                        long offset = Math.floorMod(i * step, imageSize);
                        if (offset + size > imageSize) {
                            offset = 0;
                        }
                        buf.clear().limit(size);
                        if (write) {
                            node.write(offset, buf, false);
                        } else {
                            node.read(offset, buf);
                        }
                    }
                } catch (Throwable t) {
                    failure.compareAndSet(null, t);
                }
            }));
        }
        for (Thread t : workers) {
            t.join();
        }
        if (failure.get() != null) {
            throw new IllegalStateException("benchmark request failed", failure.get());
        }
    }
}
