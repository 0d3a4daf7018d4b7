package jblockd.block.qcow2;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

import jblockd.block.BlockNode;
import jblockd.block.DriverRegistry;
import jblockd.block.ImageCreator;
import jblockd.block.NodeGraph;
import jblockd.block.bitmap.PersistentBitmapStore;
import jblockd.block.bitmap.StoredBitmap;

/**
 * The cost of the bitmaps' write-intent record (issue 13: 4 KiB random writes with the record on
 * at least 0.9x the IOPS without it): the request shape of {@code Qcow2Bench} (offset = i * step
 * mod 1 GiB, {@code depth} virtual threads) on a fresh 1 GiB qcow2 image, in rounds that
 * alternate the modes so that drift of a shared machine hits all of them alike:
 * <ul>
 * <li>{@code none}: no bitmap in the image;
 * <li>{@code qemu}: two persistent bitmaps (64 KiB and 4 KiB granularity), in_use, no record: QEMU's cost;
 * <li>{@code record}: the same, the record armed (sync once, then the driver marks regions);
 * <li>{@code record+sync}: armed, and a sync every {@code syncEvery} requests (regions go back
 * to fine bits only when untouched for an interval, so a random workload keeps them coarse).
 * </ul>
 * Not run by the tests. Prints {@code RESULT mode round seconds iops}, then the median IOPS per mode.
 * <pre>
 * IntentRecordBench DIR [count=20000] [depth=64] [rounds=3] [cache=none|writeback] [syncEvery=2000]
 * </pre>
 */
public final class IntentRecordBench {
    private static final long SIZE = 1L << 30;
    private static final long STEP = 134541312L;

    private IntentRecordBench() {
    }

    public static void main(String[] args) throws Exception {
        Path dir = Path.of(args[0]);
        int count = args.length > 1 ? Integer.parseInt(args[1]) : 20000;
        int depth = args.length > 2 ? Integer.parseInt(args[2]) : 64;
        int rounds = args.length > 3 ? Integer.parseInt(args[3]) : 3;
        boolean direct = args.length <= 4 || args[4].equals("none");
        int syncEvery = args.length > 5 ? Integer.parseInt(args[5]) : 2000;
        String[] modes = {"none", "qemu", "record", "record+sync"};
        List<List<Double>> iops = new ArrayList<>();
        for (String ignored : modes) {
            iops.add(new ArrayList<>());
        }
        run(dir, "record", count / 4, depth, direct, syncEvery); // JIT warm-up, untimed
        for (int round = 0; round < rounds; round++) {
            for (int m = 0; m < modes.length; m++) {
                double secs = run(dir, modes[m], count, depth, direct, syncEvery);
                iops.get(m).add(count / secs);
                System.out.printf("RESULT %s %d %.3f %.0f%n", modes[m], round, secs, count / secs);
            }
        }
        double base = median(iops.get(0));
        for (int m = 0; m < modes.length; m++) {
            double v = median(iops.get(m));
            System.out.printf("%-12s %8.0f IOPS  %5.2fx%n", modes[m], v, v / base);
        }
    }

    private static double median(List<Double> v) {
        List<Double> s = new ArrayList<>(v);
        s.sort(null);
        return s.get(s.size() / 2);
    }

    private static double run(Path dir, String mode, int count, int depth, boolean direct, int syncEvery)
            throws Exception {
        Path img = dir.resolve("intent-bench.qcow2");
        Files.deleteIfExists(img);
        NodeGraph graph = new NodeGraph(DriverRegistry.standard());
        try {
            graph.drivers().creator("qcow2").orElseThrow().create(ImageCreator.Options.of(img, SIZE));
            List<StoredBitmap> bitmaps = List.of(
                    new StoredBitmap("b64k", 65536, SIZE, true, false, new BitSet()),
                    new StoredBitmap("b4k", 4096, SIZE, true, false, new BitSet()));
            if (!mode.equals("none")) {
                BlockNode n = graph.add(graph.imageOptions(img, "qcow2", false, direct, null));
                n.driver().persistentBitmaps().orElseThrow().store(bitmaps);
                graph.closeAll();
                graph = new NodeGraph(DriverRegistry.standard());
            }
            BlockNode node = graph.add(graph.imageOptions(img, "qcow2", false, direct, null));
            PersistentBitmapStore store = node.driver().persistentBitmaps().orElseThrow();
            boolean record = mode.startsWith("record");
            if (record) {
                store.sync(bitmaps);
            }
            // the node's in-memory bitmaps, as far as the syncs need them
            BitSet b64 = new BitSet();
            BitSet b4 = new BitSet();
            AtomicLong next = new AtomicLong();
            List<Thread> workers = new ArrayList<>();
            List<Throwable> errors = new ArrayList<>();
            long t0 = System.nanoTime();
            for (int w = 0; w < depth; w++) {
                workers.add(Thread.ofVirtual().start(() -> {
                    ByteBuffer buf = ByteBuffer.allocateDirect(4096 + 4096).alignedSlice(4096);
                    try {
                        long i;
                        while ((i = next.getAndIncrement()) < count) {
                            long off = Math.floorMod(i * STEP, SIZE);
                            buf.clear();
                            node.write(off, buf, false);
                            synchronized (b64) {
                                b64.set((int) (off >>> 16));
                                b4.set((int) (off >>> 12));
                            }
                            if (mode.equals("record+sync") && i % syncEvery == syncEvery - 1) {
                                List<StoredBitmap> now;
                                synchronized (b64) {
                                    now = List.of(new StoredBitmap("b64k", 65536, SIZE, true, false, (BitSet) b64.clone()),
                                            new StoredBitmap("b4k", 4096, SIZE, true, false, (BitSet) b4.clone()));
                                }
                                store.sync(now);
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
            node.flush();
            double secs = (System.nanoTime() - t0) / 1e9;
            if (!errors.isEmpty()) {
                throw new IllegalStateException(mode + " failed", errors.getFirst());
            }
            return secs;
        } finally {
            graph.closeAll();
            Files.deleteIfExists(img);
        }
    }
}
