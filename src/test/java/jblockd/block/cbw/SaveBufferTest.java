package jblockd.block.cbw;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.DriverRegistry;
import jblockd.block.Errno;
import jblockd.block.IoError;
import jblockd.block.NodeGraph;
import jblockd.job.GatedDriver;
import jblockd.qapi.IoOperation;

/**
 * The save buffer of {@link BlockCopy} (issue 17): a copy-before-write keeps old data in memory
 * and returns, a drain writes it to the target later, exactly once; a full buffer falls back to
 * the synchronous copy; a failed drain keeps its data for a retry.
 */
class SaveBufferTest {
    private static final int CLUSTER = 64 * 1024;

    @TempDir
    Path dir;

    private final NodeGraph graph = new NodeGraph(DriverRegistry.standard());

    private BlockNode file(String name, int size, byte fill) throws Exception {
        Path p = dir.resolve(name);
        byte[] b = new byte[size];
        Arrays.fill(b, fill);
        Files.write(p, b);
        return graph.add(new BlockdevOptions.File(BlockdevOptions.Common.defaults().withNodeName(name), p.toString()));
    }

    private static byte[] read(BlockNode n, long offset, int len) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(len);
        n.read(offset, b);
        return b.array();
    }

    /** The guest's write after its copy-before-write: new data on the source. */
    private static void guestWrite(BlockCopy copy, BlockNode src, long offset, int len, byte fill) throws IOException {
        copy.copyBeforeWrite(offset, len);
        byte[] b = new byte[len];
        Arrays.fill(b, fill);
        src.write(offset, ByteBuffer.wrap(b), false);
    }

    @Test
    void aSavedWriteLeavesTheTargetAloneUntilItsDrainThenTheOldDataArrivesOnce() throws Exception {
        int size = 4 * CLUSTER;
        BlockNode src = file("s", size, (byte) 1);
        BlockNode tgt = file("t", size, (byte) 0);
        BlockCopy copy = new BlockCopy(src, tgt, size, CLUSTER, CLUSTER, 2, false, 4L * CLUSTER);
        AtomicLong progress = new AtomicLong();
        copy.onProgress(progress::addAndGet);

        guestWrite(copy, src, CLUSTER + 10, 100, (byte) 2);
        assertThat(read(tgt, CLUSTER, CLUSTER)).as("not on the target yet").containsOnly((byte) 0);
        assertThat(copy.saveUse()).isEqualTo(new BlockCopy.SaveUse(4L * CLUSTER, CLUSTER, 1, 0));
        assertThat(copy.savedRun(CLUSTER, 3L * CLUSTER)).isEqualTo(CLUSTER);
        assertThat(copy.savedRun(0, 4L * CLUSTER)).isEqualTo(-CLUSTER);
        // the snapshot view reads the old data from the buffer
        ByteBuffer view = ByteBuffer.allocate(CLUSTER);
        assertThat(copy.readSaved(CLUSTER, view)).isEqualTo(CLUSTER);
        assertThat(view.array()).containsOnly((byte) 1);
        // a second write to the saved cluster waits for nothing and saves nothing
        guestWrite(copy, src, CLUSTER, 10, (byte) 3);
        assertThat(copy.saveUse().saves()).isEqualTo(1);
        // the background copy never claims it: clusters 0, 2, 3 only
        BlockCopy.Claim c;
        while ((c = copy.claimNext(0)) != null) {
            assertThat(c.first()).isNotEqualTo(1);
            copy.copyAndRelease(c);
        }
        assertThat(copy.hasWork()).as("the saved cluster is still to reach the target").isTrue();
        assertThat(copy.drainOne()).isTrue();
        assertThat(copy.drainOne()).isFalse();
        assertThat(copy.hasWork()).isFalse();
        assertThat(read(tgt, 0, size)).as("the point in time").containsOnly((byte) 1);
        assertThat(progress.get()).as("every byte counted once").isEqualTo(size);
        assertThat(copy.saveUse().used()).isZero();
    }

    /**
     * Guests first covers their saved old data: the job's next chunk waits while the save queue
     * holds entries (an unlimited job's chunk writes otherwise crowd the drain out of the target
     * and the buffer fills), and goes on as soon as the drain took them.
     */
    @Test
    void theBackgroundCopyWaitsUntilSavedDataIsOnItsWayToTheTarget() throws Exception {
        int size = 4 * CLUSTER;
        BlockNode src = file("s", size, (byte) 1);
        BlockNode tgt = file("t", size, (byte) 0);
        BlockCopy copy = new BlockCopy(src, tgt, size, CLUSTER, CLUSTER, 2, false, 4L * CLUSTER);
        copy.yieldBound(TimeUnit.HOURS.toNanos(1)); // only the drain can end the wait below
        copy.yieldToGuests(); // nothing saved, no guest: no wait

        guestWrite(copy, src, 0, 100, (byte) 2);
        Thread job = Thread.ofPlatform().start(copy::yieldToGuests);
        while (job.isAlive() && job.getState() != Thread.State.TIMED_WAITING) {
            Thread.onSpinWait();
        }
        assertThat(job.isAlive()).as("waits while saved data is queued").isTrue();

        assertThat(copy.drainOne()).isTrue();
        job.join(Duration.ofSeconds(30));
        assertThat(job.isAlive()).as("goes on once the drain took the queue").isFalse();
        assertThat(read(tgt, 0, CLUSTER)).containsOnly((byte) 1);
    }

    @Test
    void aFullBufferFallsBackToTheSynchronousCopyWithoutLossOrDeadlock() throws Exception {
        int size = 4 * CLUSTER;
        BlockNode src = file("s", size, (byte) 1);
        BlockNode tgt = file("t", size, (byte) 0);
        BlockCopy copy = new BlockCopy(src, tgt, size, CLUSTER, 2 * CLUSTER, 2, false, CLUSTER);
        guestWrite(copy, src, 0, 10, (byte) 2);              // fills the buffer
        guestWrite(copy, src, 2L * CLUSTER, 10, (byte) 2);   // no room: copied at once
        guestWrite(copy, src, 3L * CLUSTER - 5, 10, (byte) 2); // a two-cluster claim, larger than the buffer
        assertThat(copy.saveUse()).isEqualTo(new BlockCopy.SaveUse(CLUSTER, CLUSTER, 1, 2));
        assertThat(read(tgt, 2L * CLUSTER, 2 * CLUSTER)).as("copied synchronously").containsOnly((byte) 1);
        assertThat(read(tgt, 0, CLUSTER)).as("still in the buffer").containsOnly((byte) 0);
        assertThat(copy.drainOne()).isTrue();
        // the buffer has room again
        guestWrite(copy, src, CLUSTER, 10, (byte) 2);
        assertThat(copy.saveUse().saves()).isEqualTo(2);
        assertThat(copy.drainOne()).isTrue();
        assertThat(copy.hasWork()).isFalse();
        assertThat(read(tgt, 0, size)).containsOnly((byte) 1);
    }

    @Test
    void aFailedDrainKeepsTheOldDataUntilTheJobRetries() throws Exception {
        int size = 2 * CLUSTER;
        BlockNode src = file("s", size, (byte) 1);
        BlockNode file = file("t", size, (byte) 0);
        BlockNode tgt = GatedDriver.over(file, "failing");
        GatedDriver.of(tgt).writeError = new IoError(Errno.ENOSPC, Errno.ENOSPC.strerror());
        BlockCopy copy = new BlockCopy(src, tgt, size, CLUSTER, CLUSTER, 2, false, 2L * CLUSTER);
        guestWrite(copy, src, 0, 10, (byte) 2);
        assertThatThrownBy(copy::drainOne).isInstanceOfSatisfying(BlockCopy.CopyError.class, e -> {
            assertThat(e.operation()).isEqualTo(IoOperation.WRITE);
            assertThat(e.errno()).isEqualTo(Errno.ENOSPC);
        });
        assertThat(copy.drainError()).isNotNull();
        assertThat(copy.drainOne()).as("no drain until the job retries").isFalse();
        assertThat(copy.savedRun(0, size)).as("still held").isEqualTo(CLUSTER);
        GatedDriver.of(tgt).writeError = null;
        copy.retryDrains();
        assertThat(copy.awaitSaved()).isTrue();
        assertThat(copy.drainOne()).isTrue();
        assertThat(read(file, 0, CLUSTER)).containsOnly((byte) 1);
    }

    @Test
    void onceDrainsStopCopyBeforeWritesCopyAtOnceAndWhatIsLeftCountsAsNotCopied() throws Exception {
        int size = 2 * CLUSTER;
        BlockNode src = file("s", size, (byte) 1);
        BlockNode tgt = file("t", size, (byte) 0);
        BlockCopy copy = new BlockCopy(src, tgt, size, CLUSTER, CLUSTER, 2, false, 2L * CLUSTER);
        guestWrite(copy, src, 0, 10, (byte) 2);
        copy.stopDrains();
        assertThat(copy.awaitSaved()).isFalse();
        guestWrite(copy, src, CLUSTER, 10, (byte) 2);
        assertThat(read(tgt, CLUSTER, CLUSTER)).containsOnly((byte) 1);
        assertThat(copy.drainOne()).isFalse();
        copy.dropSaved();
        assertThat(copy.saveUse().used()).isZero();
        jblockd.block.bitmap.DirtyBitmap rest = new jblockd.block.bitmap.DirtyBitmap(size, CLUSTER);
        copy.markRemaining(rest);
        assertThat(rest.isDirty(0)).as("saved, never written").isTrue();
        assertThat(rest.isDirty(CLUSTER)).isFalse();
    }

    @Test
    void zeroOldDataOverAFreshTargetNeedsNoBuffer() throws Exception {
        int size = 2 * CLUSTER;
        BlockNode src = file("s", size, (byte) 0);
        BlockNode tgt = file("t", size, (byte) 0);
        BlockCopy copy = new BlockCopy(src, tgt, size, CLUSTER, CLUSTER, 2, true, 2L * CLUSTER);
        AtomicLong progress = new AtomicLong();
        copy.onProgress(progress::addAndGet);
        guestWrite(copy, src, 0, 10, (byte) 2);
        assertThat(copy.saveUse()).isEqualTo(new BlockCopy.SaveUse(2L * CLUSTER, 0, 0, 0));
        assertThat(progress.get()).isEqualTo(CLUSTER);
        assertThat(copy.savedRun(0, size)).isNegative();
    }
}
