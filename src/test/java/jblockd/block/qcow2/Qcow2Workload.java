package jblockd.block.qcow2;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

import jblockd.block.BlockNode;

/**
 * A randomized differential workload: the same write / write-zeroes / discard sequence goes to
 * a qcow2 node and to a byte-array model of what it must read back. Discard is modelled as our
 * driver documents it: whole clusters only (the image's partial last cluster counts as whole),
 * reading as zeroes unless a v2 image has a backing file, which then shows through.
 */
final class Qcow2Workload {
    final BlockNode node;
    final byte[] model;
    private final byte[] backingData;
    private final int clusterSize;
    private final boolean v3;

    Qcow2Workload(BlockNode node, byte[] initial, byte[] backingData, int clusterSize, boolean v3) {
        this.node = node;
        this.model = initial;
        this.backingData = backingData;
        this.clusterSize = clusterSize;
        this.v3 = v3;
    }

    /** {@code count} random operations inside {@code [lo, hi)}, applied to node and model. */
    void randomOps(Random r, int count, long lo, long hi) throws IOException {
        for (int i = 0; i < count; i++) {
            long span = hi - lo;
            long off;
            int len;
            int shape = r.nextInt(4);
            int maxLen = (int) Math.min(span, Math.max(4096, 3L * clusterSize));
            if (shape == 0) { // cluster aligned
                off = lo + alignDown(nextLong(r, span), clusterSize);
                len = Math.max(1, alignDown(1 + r.nextInt(maxLen), clusterSize));
            } else if (shape == 1) { // sector aligned
                off = lo + alignDown(nextLong(r, span), 512);
                len = Math.max(512, alignDown(1 + r.nextInt(maxLen), 512));
            } else if (shape == 2) { // any bytes, small
                off = lo + nextLong(r, span);
                len = 1 + r.nextInt(Math.min(maxLen, 1000));
            } else { // any bytes, large
                off = lo + nextLong(r, span);
                len = 1 + r.nextInt((int) Math.min(span, 256 * 1024));
            }
            if (off >= hi) {
                off = hi - 1;
            }
            len = (int) Math.min(len, hi - off);
            int op = r.nextInt(10);
            if (op < 6) {
                write(off, randomBytes(r, len));
            } else if (op < 8) {
                writeZeroes(off, len, r.nextBoolean());
            } else {
                discard(off, len);
            }
        }
    }

    void write(long off, byte[] data) throws IOException {
        node.write(off, ByteBuffer.wrap(data), false);
        synchronized (this) {
            System.arraycopy(data, 0, model, (int) off, data.length);
        }
    }

    void writeZeroes(long off, int len, boolean mayUnmap) throws IOException {
        node.writeZeroes(off, len, mayUnmap);
        synchronized (this) {
            Arrays.fill(model, (int) off, (int) off + len, (byte) 0);
        }
    }

    void discard(long off, int len) throws IOException {
        node.discard(off, len);
        long end = off + len;
        long a = alignUp(off, clusterSize);
        long b = end >= model.length ? alignUp(end, clusterSize) : alignDown(end, clusterSize);
        b = Math.min(b, model.length);
        synchronized (this) {
            for (long p = a; p < b; p++) {
                model[(int) p] = !v3 && backingData != null
                        ? (p < backingData.length ? backingData[(int) p] : 0) : 0;
            }
        }
    }

    /** Reads the whole node back (in odd-sized chunks) and compares with the model. */
    void verify() throws IOException {
        byte[] actual = new byte[model.length];
        int pos = 0;
        int chunk = 777_777;
        while (pos < actual.length) {
            int n = Math.min(chunk, actual.length - pos);
            node.read(pos, ByteBuffer.wrap(actual, pos, n).slice());
            pos += n;
        }
        int diff = Arrays.mismatch(actual, model);
        assertThat(diff).as("first differing byte (cluster size %d)", clusterSize).isEqualTo(-1);
    }

    /** Runs several virtual threads at once: each on its own (unaligned) region, plus writers of identical data to one shared range. */
    void concurrentOps(Random seed, int threads, int opsPerThread) throws Exception {
        long size = model.length;
        long region = size / (threads + 1);
        List<Thread> ts = new ArrayList<>();
        List<Throwable> errors = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
            long lo = t * region + (t == 0 ? 0 : 333);
            long hi = (t + 1) * region + 333;
            long s = seed.nextLong();
            ts.add(Thread.ofVirtual().name("qcow2-worker-" + t).start(() -> {
                try {
                    randomOps(new Random(s), opsPerThread, lo, hi);
                } catch (Throwable e) {
                    synchronized (errors) {
                        errors.add(e);
                    }
                }
            }));
        }
        // Identical data written by several threads to the same range in the last region.
        long shared = threads * region + 4097;
        byte[] same = randomBytes(seed, (int) Math.min(3L * clusterSize + 123, size - shared));
        for (int t = 0; t < 4; t++) {
            ts.add(Thread.ofVirtual().name("qcow2-same-" + t).start(() -> {
                try {
                    write(shared, same);
                } catch (Throwable e) {
                    synchronized (errors) {
                        errors.add(e);
                    }
                }
            }));
        }
        for (Thread t : ts) {
            t.join();
        }
        assertThat(errors).isEmpty();
    }

    static byte[] randomBytes(Random r, int len) {
        byte[] b = new byte[len];
        r.nextBytes(b);
        return b;
    }

    private static long nextLong(Random r, long bound) {
        return bound <= 0 ? 0 : (r.nextLong() & Long.MAX_VALUE) % bound;
    }

    private static int alignDown(long v, int a) {
        return (int) (v / a * a);
    }

    private static long alignUp(long v, int a) {
        return (v + a - 1) / a * a;
    }
}
