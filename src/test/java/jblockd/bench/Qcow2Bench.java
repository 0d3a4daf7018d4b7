package jblockd.bench;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

import jblockd.block.BlockNode;
import jblockd.block.DriverRegistry;
import jblockd.block.ImageCreator;
import jblockd.block.NodeGraph;

/**
 * qcow2 throughput through our driver, shaped like {@code qemu-img bench} so that
 * bench/qcow2-bench.sh can put the two side by side: requests of {@code size} bytes at
 * {@code offset = i * step mod image size}, {@code depth} in flight (virtual threads), on a fresh
 * 1 GiB image. Not run by the tests.
 * <pre>
 * Qcow2Bench IMAGE [count1M=1024] [count4k=20000] [depth=64] [step4k=134541312]
 * </pre>
 * Prints one {@code RESULT name seconds requests bytes flush-seconds} line per phase; a write
 * phase's time includes its final flush (the data is on disk, as with qemu-img bench -t none).
 */
public final class Qcow2Bench {
    private static final long IMAGE_SIZE = 1L << 30;

    private Qcow2Bench() {
    }

    public static void main(String[] args) throws Exception {
        Path img = Path.of(args[0]);
        int count1m = args.length > 1 ? Integer.parseInt(args[1]) : 1024;
        int count4k = args.length > 2 ? Integer.parseInt(args[2]) : 20000;
        int depth = args.length > 3 ? Integer.parseInt(args[3]) : 64;
        long step4k = args.length > 4 ? Long.parseLong(args[4]) : 134541312L;

        warmUp(img, depth, step4k);
        NodeGraph graph = new NodeGraph(DriverRegistry.standard());
        try {
            Files.deleteIfExists(img);
            graph.drivers().creator("qcow2").orElseThrow().create(ImageCreator.Options.of(img, IMAGE_SIZE));
            BlockNode node = graph.add(graph.imageOptions(img, "qcow2", false, false, null));
            run("seq-write-1M", node, true, 1 << 20, 1 << 20, count1m, depth);
            run("seq-read-1M", node, false, 1 << 20, 1 << 20, count1m, depth);
            graph.closeAll();

            Files.deleteIfExists(img);
            graph = new NodeGraph(DriverRegistry.standard());
            graph.drivers().creator("qcow2").orElseThrow().create(ImageCreator.Options.of(img, IMAGE_SIZE));
            node = graph.add(graph.imageOptions(img, "qcow2", false, false, null));
            run("rand-write-4k", node, true, 4096, step4k, count4k, depth);
            run("rand-read-4k", node, false, 4096, step4k, count4k, depth);
        } finally {
            graph.closeAll();
        }
    }

    /** JIT warm-up on a scratch image (untimed): a JVM's first seconds say little about its speed. */
    private static void warmUp(Path img, int depth, long step4k) throws Exception {
        Path scratch = img.resolveSibling(img.getFileName() + ".warmup");
        NodeGraph graph = new NodeGraph(DriverRegistry.standard());
        try {
            graph.drivers().creator("qcow2").orElseThrow().create(ImageCreator.Options.of(scratch, IMAGE_SIZE));
            BlockNode node = graph.add(graph.imageOptions(scratch, "qcow2", false, false, null));
            for (int round = 0; round < 3; round++) {
                quiet(node, true, 1 << 20, 1 << 20, 64, depth);
                quiet(node, false, 1 << 20, 1 << 20, 64, depth);
                quiet(node, true, 4096, step4k, 2000, depth);
                quiet(node, false, 4096, step4k, 2000, depth);
            }
        } finally {
            graph.closeAll();
            Files.deleteIfExists(scratch);
        }
    }

    private static void quiet(BlockNode node, boolean write, int size, long step, int count, int depth)
            throws Exception {
        java.io.PrintStream out = System.out;
        System.setOut(new java.io.PrintStream(java.io.OutputStream.nullOutputStream()));
        try {
            run("warmup", node, write, size, step, count, depth);
        } finally {
            System.setOut(out);
        }
    }

    private static void run(String name, BlockNode node, boolean write, int size, long step, int count,
                            int depth) throws Exception {
        AtomicLong next = new AtomicLong();
        List<Thread> workers = new ArrayList<>();
        List<Throwable> errors = new ArrayList<>();
        long t0 = System.nanoTime();
        for (int w = 0; w < depth; w++) {
            workers.add(Thread.ofVirtual().name("bench-" + w).start(() -> {
                ByteBuffer buf = ByteBuffer.allocateDirect(size);
                for (int i = 0; i < size; i += 8) {
                    buf.putLong(i, 0x6a626c6f636b6400L + i);
                }
                try {
                    long i;
                    while ((i = next.getAndIncrement()) < count) {
                        long off = Math.floorMod(i * step, IMAGE_SIZE);
                        buf.clear();
                        if (write) {
                            node.write(off, buf, false);
                        } else {
                            node.read(off, buf);
                        }
                    }
                } catch (Throwable e) {
                    synchronized (errors) {
                        errors.add(e);
                    }
                }
            }));
        }
        for (Thread t : workers) {
            t.join();
        }
        long t1 = System.nanoTime();
        if (write) {
            node.flush();
        }
        double secs = (System.nanoTime() - t0) / 1e9;
        double flushSecs = (System.nanoTime() - t1) / 1e9;
        if (!errors.isEmpty()) {
            throw new IllegalStateException(name + " failed", errors.getFirst());
        }
        System.out.printf("RESULT %s %.3f %d %d %.3f%n", name, secs, count, (long) count * size, flushSecs);
    }
}
