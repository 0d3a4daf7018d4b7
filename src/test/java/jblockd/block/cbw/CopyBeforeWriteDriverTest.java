package jblockd.block.cbw;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.DriverRegistry;
import jblockd.block.Errno;
import jblockd.block.IoError;
import jblockd.block.NodeGraph;
import jblockd.block.cbw.CopyBeforeWriteDriver.OnCbwError;

/** The snapshot view of {@link CopyBeforeWriteDriver} over real files, request by request. */
class CopyBeforeWriteDriverTest {
    private static final int CLUSTER = 64 * 1024;
    private static final int SIZE = 8 * CLUSTER;

    @TempDir
    Path dir;

    private final NodeGraph graph = new NodeGraph(DriverRegistry.standard());

    private BlockNode file(String name, byte fill, boolean readOnly) throws Exception {
        Path p = dir.resolve(name);
        byte[] b = new byte[SIZE];
        Arrays.fill(b, fill);
        Files.write(p, b);
        return graph.add(new BlockdevOptions.File(BlockdevOptions.Common.defaults().withNodeName(name)
                .withReadOnly(readOnly), p.toString()));
    }

    private static ByteBuffer filled(int len, int value) {
        byte[] b = new byte[len];
        Arrays.fill(b, (byte) value);
        return ByteBuffer.wrap(b);
    }

    private static byte[] read(CopyBeforeWriteDriver cbw, long off, int len) throws Exception {
        ByteBuffer b = ByteBuffer.allocate(len);
        cbw.snapshotRead(off, b);
        return b.array();
    }

    private CopyBeforeWriteDriver cbw(BlockNode src, BlockNode tgt, OnCbwError onError) {
        return new CopyBeforeWriteDriver(src, new BlockCopy(src, tgt, SIZE, CLUSTER, CLUSTER, 2, false), onError, 0);
    }

    @Test
    void theSnapshotKeepsTheOldDataFromTheTargetWhereCopiedAndTheSourceElsewhere() throws Exception {
        BlockNode src = file("s", (byte) 7, false);
        BlockNode tgt = file("t", (byte) 0, false);
        CopyBeforeWriteDriver cbw = cbw(src, tgt, OnCbwError.BREAK_GUEST_WRITE);
        cbw.write(CLUSTER + 10, filled(100, 9), false);
        assertThat(read(cbw, 0, 3 * CLUSTER)).containsOnly(7);
        assertThat(cbw.snapshotCounts()).containsExactly(SIZE, CLUSTER);
        ByteBuffer live = ByteBuffer.allocate(100);
        src.read(CLUSTER + 10, live);
        assertThat(live.array()).containsOnly(9);
    }

    @Test
    void aDiscardGivesWholeClustersUpAndTheyBecomeUnreadable() throws Exception {
        BlockNode src = file("s", (byte) 7, false);
        BlockNode tgt = file("t", (byte) 0, false);
        CopyBeforeWriteDriver cbw = cbw(src, tgt, OnCbwError.BREAK_GUEST_WRITE);
        cbw.snapshotDiscard(CLUSTER / 2, 2 * CLUSTER); // only cluster 1 is whole in it
        assertThat(read(cbw, 0, CLUSTER)).containsOnly(7);
        assertThat(read(cbw, 2 * CLUSTER, CLUSTER)).containsOnly(7);
        assertThatThrownBy(() -> read(cbw, CLUSTER, 1)).isInstanceOfSatisfying(IoError.class,
                e -> assertThat(e.errno()).isEqualTo(Errno.EACCES));
        // a given-up cluster is not copied before a write any more
        cbw.write(CLUSTER, filled(CLUSTER, 9), false);
        assertThat(cbw.snapshotCounts()[1]).isEqualTo(CLUSTER); // done marks the range; access stays cleared
        assertThatThrownBy(() -> read(cbw, CLUSTER, 1)).isInstanceOf(IoError.class);
    }

    @Test
    void breakGuestWriteFailsTheWriteAndBreakSnapshotFailsTheSnapshot() throws Exception {
        BlockNode src = file("s", (byte) 7, false);
        BlockNode ro = file("t", (byte) 0, true);
        CopyBeforeWriteDriver guest = cbw(src, ro, OnCbwError.BREAK_GUEST_WRITE);
        assertThatThrownBy(() -> guest.write(0, filled(512, 9), false)).isInstanceOf(IoError.class);
        assertThat(read(guest, 0, 512)).containsOnly(7);

        CopyBeforeWriteDriver snap = cbw(src, ro, OnCbwError.BREAK_SNAPSHOT);
        snap.write(0, filled(512, 9), false);
        assertThatThrownBy(() -> read(snap, 4 * CLUSTER, 1)).isInstanceOfSatisfying(IoError.class,
                e -> assertThat(e.errno()).isEqualTo(Errno.EACCES));
    }

    /**
     * A snapshot read of the source in flight holds a guest write to its clusters after the copy
     * and before the source changes (the reader would otherwise see the new data).
     */
    @Test
    void aGuestWriteWaitsForFrozenReadsOfTheSourceAfterItsCopy() throws Exception {
        BlockNode src = file("s", (byte) 7, false);
        BlockNode tgt = file("t", (byte) 0, false);
        CopyBeforeWriteDriver cbw = cbw(src, tgt, OnCbwError.BREAK_GUEST_WRITE);
        long reader = cbw.frozenReads().begin(0, CLUSTER); // a reader that decided to read the source
        Thread writer = Thread.ofPlatform().start(() -> {
            try {
                cbw.write(100, filled(100, 9), false);
            } catch (Exception e) {
                throw new IllegalStateException(e);
            }
        });
        // the writer parks in awaitOverlapping once its copy is done
        for (int i = 0; i < 10_000 && writer.getState() != Thread.State.WAITING; i++) {
            Thread.onSpinWait();
            Thread.yield();
        }
        assertThat(writer.getState()).isEqualTo(Thread.State.WAITING);
        ByteBuffer b = ByteBuffer.allocate(100);
        src.read(100, b);
        assertThat(b.array()).as("the source is unchanged while the reader reads it").containsOnly(7);
        cbw.frozenReads().end(reader);
        writer.join();
        b.clear();
        src.read(100, b);
        assertThat(b.array()).containsOnly(9);
    }
}
