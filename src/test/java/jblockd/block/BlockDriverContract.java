package jblockd.block;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.atomic.AtomicReference;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The behaviour every {@link BlockDriver} shares, checked through a {@link BlockNode} (after
 * Lucene's BaseDirectoryTestCase): a subclass only says how to open a fresh, writable,
 * all-zero node of a given size. Data is checked against a byte-array model of the image.
 * Drivers that store nothing (null-co) override {@link #storesData()}.
 */
public abstract class BlockDriverContract {
    protected static final long SIZE = 4L << 20;

    @TempDir
    protected Path dir;

    private final List<BlockNode> opened = new ArrayList<>();

    /** A fresh writable node of {@code size} bytes that reads as zeroes, opened in {@code dir}. */
    protected abstract BlockNode open(Path dir, long size) throws IOException;

    /** False for drivers that drop writes (null-co): reads then always return zeroes. */
    protected boolean storesData() {
        return true;
    }

    private BlockNode node() throws IOException {
        BlockNode n = open(dir, SIZE);
        opened.add(n);
        return n;
    }

    @AfterEach
    void closeNodes() throws IOException {
        for (int i = opened.size() - 1; i >= 0; i--) {
            closeTree(opened.get(i));
        }
    }

    /** Closes a node, then its children (the graph would do the same on blockdev-del). */
    private static void closeTree(BlockNode n) throws IOException {
        List<BlockChild> children = n.driver().children();
        n.close();
        for (BlockChild c : children) {
            if (c.node() != null) {
                closeTree(c.node());
            }
        }
    }

    // ---- helpers ------------------------------------------------------------------------

    protected static byte[] pattern(long seed, int len) {
        byte[] b = new byte[len];
        new Random(seed).nextBytes(b);
        return b;
    }

    protected static byte[] read(BlockNode n, long offset, int len) throws IOException {
        ByteBuffer buf = ByteBuffer.allocate(len);
        n.read(offset, buf);
        assertThat(buf.hasRemaining()).as("read fills the buffer").isFalse();
        return buf.array();
    }

    private void write(BlockNode n, byte[] model, long offset, byte[] data, boolean fua) throws IOException {
        n.write(offset, ByteBuffer.wrap(data), fua);
        if (storesData()) {
            System.arraycopy(data, 0, model, (int) offset, data.length);
        }
    }

    private void assertImage(BlockNode n, byte[] model) throws IOException {
        byte[] all = read(n, 0, model.length);
        if (!Arrays.equals(all, model)) {
            int i = Arrays.mismatch(all, model);
            throw new AssertionError("image differs from the model at byte " + i + ": got " + all[i]
                    + ", want " + model[i]);
        }
    }

    // ---- tests --------------------------------------------------------------------------

    @Test
    void freshNodeHasItsLengthAndReadsZeroes() throws IOException {
        BlockNode n = node();
        assertThat(n.length()).isEqualTo(SIZE);
        assertImage(n, new byte[(int) SIZE]);
    }

    @Test
    void writesAtOddOffsetsAndLengthsReadBackExactly() throws IOException {
        BlockNode n = node();
        byte[] model = new byte[(int) SIZE];
        long[][] cases = {{0, 1}, {1, 511}, {513, 4095}, {4096, 4096}, {65535, 70001},
                {1 << 20, 1 << 20}, {(1 << 20) + 3, 17}, {SIZE - 1, 1}, {SIZE - 4097, 4097}};
        int seed = 1;
        for (long[] c : cases) {
            write(n, model, c[0], pattern(seed++, (int) c[1]), false);
        }
        // Partial reads at odd places see the same bytes as the full image.
        assertThat(read(n, 70, 900)).isEqualTo(Arrays.copyOfRange(model, 70, 970));
        assertThat(read(n, 65534, 3)).isEqualTo(Arrays.copyOfRange(model, 65534, 65537));
        assertImage(n, model);
    }

    @Test
    void fuaWriteAndFlushKeepData() throws IOException {
        BlockNode n = node();
        byte[] model = new byte[(int) SIZE];
        write(n, model, 12345, pattern(7, 54321), true);
        n.flush();
        write(n, model, 300, pattern(8, 100), false);
        n.flush();
        assertImage(n, model);
    }

    @Test
    void writeZeroesMakesOddRangesZeroWithAndWithoutUnmap() throws IOException {
        BlockNode n = node();
        byte[] model = new byte[(int) SIZE];
        write(n, model, 0, pattern(3, (int) SIZE), false);
        n.writeZeroes(1001, 70000, false);
        Arrays.fill(model, 1001, 71001, (byte) 0);
        n.writeZeroes(1 << 20, 1 << 20, true);
        Arrays.fill(model, 1 << 20, 2 << 20, (byte) 0);
        n.writeZeroes((3 << 20) + 7, 65536 + 13, true);
        Arrays.fill(model, (3 << 20) + 7, (3 << 20) + 7 + 65536 + 13, (byte) 0);
        assertImage(n, model);
    }

    @Test
    void discardThenWriteZeroesReadsZeroes() throws IOException {
        BlockNode n = node();
        byte[] model = new byte[(int) SIZE];
        write(n, model, 0, pattern(4, 1 << 20), false);
        n.discard(65536, 131072);
        n.discard(5, 100); // unaligned: may do nothing, must not fail
        n.writeZeroes(65536, 131072, false);
        Arrays.fill(model, 65536, 65536 + 131072, (byte) 0);
        // The discarded-but-not-zeroed bytes are unspecified; take them from the image.
        byte[] head = read(n, 5, 100);
        System.arraycopy(head, 0, model, 5, 100);
        assertImage(n, model);
    }

    @Test
    void statusCoversTheRangeMergesRunsAndZeroExtentsReadZero() throws IOException {
        BlockNode n = node();
        byte[] model = new byte[(int) SIZE];
        // Two adjacent data writes, a hole, then data again.
        write(n, model, 0, pattern(5, 65536), false);
        write(n, model, 65536, pattern(6, 65536), false);
        write(n, model, 1 << 20, pattern(7, 65536), false);
        n.flush();
        List<Extent> extents = new ArrayList<>();
        long pos = 0;
        while (pos < SIZE) {
            Extent e = n.status(pos, SIZE - pos);
            assertThat(e.offset()).as("extent starts where asked").isEqualTo(pos);
            assertThat(e.end()).as("extent stays in the request").isLessThanOrEqualTo(SIZE);
            if (!extents.isEmpty()) {
                assertThat(e.allocation()).as("runs of equal status are merged: %s then %s",
                        extents.getLast(), e).isNotEqualTo(extents.getLast().allocation());
            }
            extents.add(e);
            pos = e.end();
            assertThat(extents).as("status terminates").hasSizeLessThan(10_000);
        }
        for (Extent e : extents) {
            if (e.allocation() != Allocation.DATA && e.length() <= Integer.MAX_VALUE) {
                assertThat(read(n, e.offset(), (int) e.length())).as("%s reads as zeroes", e)
                        .containsOnly((byte) 0);
            }
        }
        if (storesData()) {
            // Written data is never reported as a hole.
            assertThat(statusAt(extents, 0)).isNotEqualTo(Allocation.ZERO);
            assertThat(statusAt(extents, 100_000)).isNotEqualTo(Allocation.ZERO);
            assertThat(statusAt(extents, (1 << 20) + 10)).isNotEqualTo(Allocation.ZERO);
            Extent first = n.status(0, SIZE);
            assertThat(first.length()).as("two adjacent writes are one run").isGreaterThanOrEqualTo(131072);
        }
        // A short query is clipped to its length.
        assertThat(n.status(10, 5)).isEqualTo(new Extent(10, 5, n.status(10, 5).allocation()));
    }

    private static Allocation statusAt(List<Extent> extents, long offset) {
        return extents.stream().filter(e -> e.offset() <= offset && offset < e.end()).findFirst()
                .orElseThrow().allocation();
    }

    @Test
    void concurrentWritersToDisjointRangesFromVirtualThreads() throws Exception {
        BlockNode n = node();
        byte[] model = new byte[(int) SIZE];
        int writers = 64;
        // Adjacent odd-sized ranges: neighbours share aligned blocks (O_DIRECT read-modify-write).
        int stride = (int) (SIZE / writers) - 1;
        AtomicReference<Throwable> failure = new AtomicReference<>();
        List<Thread> threads = new ArrayList<>();
        for (int w = 0; w < writers; w++) {
            int id = w;
            long offset = (long) w * stride + 3;
            byte[] data = pattern(100 + w, stride);
            if (storesData()) {
                System.arraycopy(data, 0, model, (int) offset, data.length);
            }
            threads.add(Thread.ofVirtual().name("writer-" + w).start(() -> {
                try {
                    // Several pieces each, so that writers interleave.
                    for (int p = 0; p < 4; p++) {
                        int from = p * stride / 4;
                        int to = (p + 1) * stride / 4;
                        n.write(offset + from, ByteBuffer.wrap(data, from, to - from), (id + p) % 7 == 0);
                    }
                } catch (Throwable t) {
                    failure.compareAndSet(null, t);
                }
            }));
        }
        for (Thread t : threads) {
            t.join(30_000);
            assertThat(t.isAlive()).as("%s finished", t.getName()).isFalse();
        }
        if (failure.get() != null) {
            throw new AssertionError("a writer failed", failure.get());
        }
        assertImage(n, model);
    }

    @Test
    void readOnlyNodeRefusesEveryModificationWithEperm() throws IOException {
        BlockNode rw = node();
        BlockNode ro = new BlockNode("ro-view", false, rw.driver(), true);
        assertThat(ro.readOnly()).isTrue();
        assertThatThrownBy(() -> ro.write(0, ByteBuffer.allocate(512), false))
                .isInstanceOfSatisfying(IoError.class, e -> assertThat(e.errno()).isEqualTo(Errno.EPERM));
        assertThatThrownBy(() -> ro.writeZeroes(0, 512, true))
                .isInstanceOfSatisfying(IoError.class, e -> assertThat(e.errno()).isEqualTo(Errno.EPERM));
        assertThatThrownBy(() -> ro.discard(0, 512))
                .isInstanceOfSatisfying(IoError.class, e -> assertThat(e.errno()).isEqualTo(Errno.EPERM));
        assertThat(read(ro, 0, 512)).containsOnly((byte) 0);
    }

    @Test
    void requestsPastTheEndAreRefusedWithEinvalUnlessGrowable() throws IOException {
        BlockNode n = node();
        assumeTrue(!n.capabilities().growable(), "growable node: see growableNodeExtends...");
        assertThatThrownBy(() -> n.read(SIZE, ByteBuffer.allocate(1)))
                .isInstanceOfSatisfying(IoError.class, e -> assertThat(e.errno()).isEqualTo(Errno.EINVAL));
        assertThatThrownBy(() -> n.write(SIZE - 511, ByteBuffer.allocate(512), false))
                .isInstanceOfSatisfying(IoError.class, e -> assertThat(e.errno()).isEqualTo(Errno.EINVAL));
        assertThatThrownBy(() -> n.writeZeroes(SIZE, 1, false))
                .isInstanceOfSatisfying(IoError.class, e -> assertThat(e.errno()).isEqualTo(Errno.EINVAL));
        assertThatThrownBy(() -> n.discard(SIZE - 1, 2))
                .isInstanceOfSatisfying(IoError.class, e -> assertThat(e.errno()).isEqualTo(Errno.EINVAL));
        assertThat(n.length()).isEqualTo(SIZE);
    }

    @Test
    void growableNodeExtendsOnWritePastTheEndAndReadsZeroesBeyondIt() throws IOException {
        BlockNode n = node();
        assumeTrue(n.capabilities().growable(), "fixed-size node");
        byte[] data = pattern(9, 1000);
        n.write(SIZE + 4096 + 7, ByteBuffer.wrap(data), false);
        assertThat(n.length()).isEqualTo(SIZE + 4096 + 7 + 1000);
        assertThat(read(n, SIZE, 4103)).containsOnly((byte) 0);
        assertThat(read(n, SIZE + 4103, 1000)).isEqualTo(data);
        assertThat(read(n, SIZE + 5103, 5000)).as("past the end reads zeroes").containsOnly((byte) 0);
        n.writeZeroes(n.length(), 3000, false);
        assertThat(n.length()).isEqualTo(SIZE + 4096 + 7 + 1000 + 3000);
    }
}
