package jblockd.block.bitmap;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Test;

import jblockd.block.BlockNode;
import jblockd.block.IoError;
import jblockd.job.mirror.JobTopFilter;

/**
 * What BlockNode records: every write, write-zeroes and discard that reaches the driver marks
 * every enabled bitmap of the node, whatever path brought it there (here: a job's filter above
 * the node, and a mirror's write-through to its target).
 */
class BitmapRecordingTest {
    private static final int SIZE = 1 << 20;
    private static final long G = 65536;

    private static void write(BlockNode n, long offset, int len) throws IOException {
        n.write(offset, ByteBuffer.allocate(len), false);
    }

    @Test
    void writesZeroWritesAndDiscardsThatReachTheDriverAreRecorded() throws Exception {
        BlockNode n = new BlockNode("n", false, new TestDisk(SIZE), false, true);
        BlockDirtyBitmap b = n.bitmaps().create("b", G, false, false, "n");
        write(n, 0, 1);
        n.writeZeroes(2 * G, 1, true);
        n.discard(4 * G, 1);
        assertThat(b.bits().toBitSet().stream().boxed().toList()).containsExactly(0, 2, 4);
    }

    @Test
    void discardIgnoreRecordsNothingButZeroWritesAreStillRecorded() throws Exception {
        // discard=ignore (QEMU's default): bdrv_co_pdiscard returns before tracking the request
        BlockNode n = new BlockNode("n", false, new TestDisk(SIZE), false, false);
        BlockDirtyBitmap b = n.bitmaps().create("b", G, false, false, "n");
        n.discard(0, G);
        assertThat(b.count()).isZero();
        n.writeZeroes(2 * G, 4096, true);
        assertThat(b.count()).isEqualTo(G);
    }

    @Test
    void aFailedWriteIsStillRecorded() throws Exception {
        // bdrv_co_write_req_finish() marks whatever the driver returned: part may have landed
        TestDisk disk = new TestDisk(SIZE);
        BlockNode n = new BlockNode("n", false, disk, false);
        BlockDirtyBitmap b = n.bitmaps().create("b", G, false, false, "n");
        disk.failWrites = true;
        assertThatThrownBy(() -> write(n, G, 2 * (int) G)).isInstanceOf(IoError.class);
        assertThatThrownBy(() -> n.writeZeroes(5 * G, 1, false)).isInstanceOf(IoError.class);
        assertThat(b.bits().toBitSet().stream().boxed().toList()).containsExactly(1, 2, 5);
        // refused before the driver (range, read-only): nothing to record
        assertThatThrownBy(() -> write(n, SIZE, 1)).isInstanceOf(IoError.class);
        assertThat(b.count()).isEqualTo(3 * G);
    }

    @Test
    void anUnalignedWriteMarksTheAlignedRangeTheNodeSendsDown() throws Exception {
        // QEMU pads a request to the node's request_alignment and marks the padded range
        BlockNode n = new BlockNode("n", false, new TestDisk(SIZE, false, 4096, 0, null), false);
        BlockDirtyBitmap b = n.bitmaps().create("b", 512, false, false, "n");
        write(n, 4096 + 100, 1);
        assertThat(b.count()).isEqualTo(4096);
        assertThat(b.bits().nextDirtyRun(0, Long.MAX_VALUE)).containsExactly(4096, 4096);
    }

    @Test
    void writesThroughAJobFilterAreRecordedOnTheNodeBelowAndOnAWriteThroughTarget() throws Exception {
        BlockNode source = new BlockNode("src", false, new TestDisk(SIZE), false);
        BlockNode target = new BlockNode("tgt", false, new TestDisk(SIZE), false);
        JobTopFilter top = new JobTopFilter("mirror_top", source, null);
        BlockNode filter = new BlockNode("#block900", true, top, false);
        BlockDirtyBitmap onSource = source.bitmaps().create("s", G, false, false, "src");
        BlockDirtyBitmap onTarget = target.bitmaps().create("t", G, false, false, "tgt");
        BlockDirtyBitmap onFilter = filter.bitmaps().create("f", G, false, false, "#block900");
        write(filter, 0, 1);
        top.setWriteThrough(target); // a completed mirror before its pivot writes both
        filter.writeZeroes(3 * G, 1, false);
        filter.discard(6 * G, 1);
        assertThat(onFilter.bits().toBitSet().stream().boxed().toList()).containsExactly(0, 3, 6);
        assertThat(onSource.bits().toBitSet().stream().boxed().toList()).containsExactly(0, 3, 6);
        assertThat(onTarget.bits().toBitSet().stream().boxed().toList()).containsExactly(3, 6);
        // a job writing straight to its target node is recorded there too
        write(target, 9 * G, 1);
        assertThat(onTarget.count()).isEqualTo(3 * G);
        // a bitmap on a backing or lower node sees only what reaches it
        assertThat(onSource.count()).isEqualTo(3 * G);
    }

    @Test
    void bitmapsOfAGrowableNodeGrowWithItAndKeepTheirBits() throws Exception {
        BlockNode file = new BlockNode("f", false, new TestDisk(2 * (int) G, true, 1, 0, null), false);
        BlockDirtyBitmap on = file.bitmaps().create("on", G, false, false, "f");
        BlockDirtyBitmap off = file.bitmaps().create("off", G, true, false, "f");
        write(file, 0, 1);
        write(file, 4 * G + 10, 100); // past the end: the file grows
        assertThat(on.size()).isEqualTo(4 * G + 512);
        assertThat(off.size()).as("every bitmap grows, recording or not").isEqualTo(4 * G + 512);
        assertThat(on.bits().toBitSet().stream().boxed().toList()).containsExactly(0, 4);
        assertThat(off.count()).isZero();
        // bitmaps of the grown node can be merged with each other
        file.bitmaps().merge(off, List.of(on));
        assertThat(off.count()).isEqualTo(2 * G);
    }

    @Test
    void concurrentWritesAndAFreezeLoseNoWrite() throws Exception {
        // every write completes before or after the freeze: it is in the frozen bits or in the
        // successor, never in neither
        long g = 4096;
        BlockNode n = new BlockNode("n", false, new TestDisk(8 << 20), false);
        BlockDirtyBitmap b = n.bitmaps().create("b", g, false, false, "n");
        int granules = 1024;
        List<Thread> writers = new ArrayList<>();
        for (int t = 0; t < 4; t++) {
            int id = t;
            writers.add(Thread.ofVirtual().start(() -> {
                try {
                    for (int i = id; i < granules; i += 4) {
                        write(n, i * g, 1);
                    }
                } catch (IOException e) {
                    throw new AssertionError(e);
                }
            }));
        }
        BlockDirtyBitmap successor = n.bitmaps().freeze(b);
        for (Thread t : writers) {
            t.join();
        }
        java.util.BitSet all = b.bits().toBitSet();
        all.or(successor.bits().toBitSet());
        assertThat(all.cardinality()).isEqualTo(granules);
        long frozen = b.count();
        write(n, 2000 * g, 1);
        assertThat(b.count()).isEqualTo(frozen);
        n.bitmaps().reclaim(b);
        assertThat(b.count()).isEqualTo((granules + 1) * g);
    }
}
