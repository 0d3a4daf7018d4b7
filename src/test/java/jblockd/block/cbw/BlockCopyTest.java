package jblockd.block.cbw;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.DriverRegistry;
import jblockd.block.NodeGraph;
import jblockd.job.GatedDriver;

/** The copy bitmap, claims and copy-before-write of {@link BlockCopy} over real files. */
class BlockCopyTest {
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

    @Test
    void restrictedToABitmapOnlyItsGranulesRoundedOutToClustersAreCopiedAndTheRestIsReported() throws Exception {
        int size = 8 * CLUSTER + 100;
        BlockNode src = file("s", size, (byte) 7);
        BlockNode tgt = file("t", size, (byte) 0);
        BlockCopy copy = new BlockCopy(src, tgt, size, CLUSTER, CLUSTER, 2, false);
        jblockd.block.bitmap.DirtyBitmap wanted = new jblockd.block.bitmap.DirtyBitmap(size, 4096);
        wanted.mark(CLUSTER + 4096, 1);          // inside cluster 1
        wanted.mark(3L * CLUSTER - 1, 2);        // the end of cluster 2 and the start of 3
        wanted.mark(8L * CLUSTER, 100);          // the short last cluster
        long dropped = copy.restrictTo(wanted);
        assertThat(copy.dirtyBytes()).isEqualTo(3L * CLUSTER + 100);
        assertThat(dropped).isEqualTo(size - copy.dirtyBytes());
        // one cluster copied, the rest is what a failed always-mode backup merges back
        BlockCopy.Claim c = copy.claimNext(0);
        assertThat(c.first()).isEqualTo(1);
        copy.copyAndRelease(new BlockCopy.Claim(c.first(), 1));
        jblockd.block.bitmap.DirtyBitmap rest = new jblockd.block.bitmap.DirtyBitmap(size, CLUSTER);
        copy.markRemaining(rest);
        assertThat(rest.isDirty(CLUSTER)).isFalse();
        assertThat(rest.isDirty(2L * CLUSTER)).isTrue();
        assertThat(rest.isDirty(3L * CLUSTER)).isTrue();
        assertThat(rest.isDirty(4L * CLUSTER)).isFalse();
        assertThat(rest.isDirty(8L * CLUSTER)).isTrue();
        assertThat(rest.dirtyBytes()).isEqualTo(2L * CLUSTER + 100);
    }

    @Test
    void oddSizedImageIsCopiedExactlyOnceToItsLastByte() throws Exception {
        int size = 5 * CLUSTER + 12345;
        BlockNode src = file("s", size, (byte) 7);
        BlockNode tgt = file("t", size, (byte) 0);
        BlockCopy copy = new BlockCopy(src, tgt, size, CLUSTER, 2 * CLUSTER, 2, false);
        AtomicLong progress = new AtomicLong();
        copy.onProgress(progress::addAndGet);
        assertThat(copy.clusterCount()).isEqualTo(6);
        BlockCopy.Claim c;
        int claims = 0;
        while ((c = copy.claimNext(0)) != null) {
            copy.copy(c);
            copy.release(c, true);
            claims++;
        }
        assertThat(claims).isEqualTo(3); // 2-cluster chunks
        assertThat(progress.get()).isEqualTo(size);
        assertThat(copy.hasWork()).isFalse();
        assertThat(Files.readAllBytes(dir.resolve("t"))).isEqualTo(Files.readAllBytes(dir.resolve("s")));
    }

    @Test
    void guestWriteWaitsForAnInFlightCopyAndNeverCopiesTwice() throws Exception {
        int size = 4 * CLUSTER;
        BlockNode src = file("s", size, (byte) 1);
        BlockNode tgt = file("t", size, (byte) 0);
        BlockCopy copy = new BlockCopy(src, tgt, size, CLUSTER, CLUSTER, 2, false);
        AtomicLong progress = new AtomicLong();
        copy.onProgress(progress::addAndGet);
        BlockCopy.Claim bg = copy.claimNext(1); // the background job holds cluster 1
        CountDownLatch done = new CountDownLatch(1);
        Thread guest = Thread.ofVirtual().start(() -> {
            try {
                copy.copyBeforeWrite(CLUSTER + 100, 10); // needs cluster 1
                done.countDown();
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        assertThat(done.await(200, TimeUnit.MILLISECONDS)).as("guest waits for the in-flight copy").isFalse();
        copy.copy(bg);
        copy.release(bg, true);
        assertThat(done.await(5, TimeUnit.SECONDS)).isTrue();
        guest.join();
        assertThat(progress.get()).as("copied once").isEqualTo(CLUSTER);
    }

    @Test
    void failedInFlightCopyMakesTheClustersTheGuestsToCopy() throws Exception {
        int size = 2 * CLUSTER;
        BlockNode src = file("s", size, (byte) 3);
        BlockNode tgt = file("t", size, (byte) 0);
        BlockCopy copy = new BlockCopy(src, tgt, size, CLUSTER, CLUSTER, 2, false);
        BlockCopy.Claim bg = copy.claimNext(0);
        Thread guest = Thread.ofVirtual().start(() -> {
            try {
                copy.copyBeforeWrite(0, 512);
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        Thread.sleep(50);
        copy.release(bg, false); // the background copy failed: cluster 0 is dirty again
        guest.join(5000);
        assertThat(guest.isAlive()).isFalse();
        byte[] t = Files.readAllBytes(dir.resolve("t"));
        assertThat(t[0]).isEqualTo((byte) 3); // the guest copied it itself
        assertThat(copy.claimNext(0).first()).isEqualTo(1); // only cluster 1 is left
    }

    @Test
    void zeroRangesAreSkippedOnAFreshTargetAndWrittenAsZeroesOtherwise() throws Exception {
        int size = 4 * CLUSTER;
        BlockNode src = file("s", size, (byte) 0);
        BlockNode fresh = file("f", size, (byte) 0);
        BlockNode stale = file("x", size, (byte) 9);
        BlockCopy a = new BlockCopy(src, fresh, size, CLUSTER, 4 * CLUSTER, 1, true);
        AtomicLong pa = new AtomicLong();
        a.onProgress(pa::addAndGet);
        assertThat(a.skipZeroes(0)).isGreaterThanOrEqualTo(0);
        BlockCopy.Claim c;
        while ((c = a.claimNext(0)) != null) {
            a.copy(c);
            a.release(c, true);
        }
        assertThat(pa.get()).isEqualTo(size);
        BlockCopy b = new BlockCopy(src, stale, size, CLUSTER, 4 * CLUSTER, 1, false);
        while ((c = b.claimNext(0)) != null) {
            b.copy(c);
            b.release(c, true);
        }
        ByteBuffer back = ByteBuffer.allocate(size);
        stale.read(0, back);
        assertThat(back.array()).containsOnly((byte) 0);
    }

    /** A filter whose reads throw {@code thrown} while {@code armed} (a driver bug, not an I/O error). */
    private static BlockNode throwingOnRead(BlockNode child, java.util.concurrent.atomic.AtomicReference<Throwable> armed) {
        jblockd.block.FilterDriver d = new jblockd.block.FilterDriver() {
            @Override
            public BlockNode filtered() {
                return child;
            }

            @Override
            public String driverName() {
                return "throwing";
            }

            @Override
            public void read(long offset, ByteBuffer dst) throws java.io.IOException {
                Throwable t = armed.getAndSet(null);
                if (t instanceof RuntimeException r) {
                    throw r;
                }
                if (t instanceof Error e) {
                    throw e;
                }
                child.read(offset, dst);
            }

            @Override
            public void write(long offset, ByteBuffer src, boolean fua) throws java.io.IOException {
                child.write(offset, src, fua);
            }

            @Override
            public void writeZeroes(long offset, long length, boolean mayUnmap) throws java.io.IOException {
                child.writeZeroes(offset, length, mayUnmap);
            }

            @Override
            public void discard(long offset, long length) throws java.io.IOException {
                child.discard(offset, length);
            }

            @Override
            public void flush() throws java.io.IOException {
                child.flush();
            }

            @Override
            public long length() throws java.io.IOException {
                return child.length();
            }

            @Override
            public jblockd.block.Extent status(long offset, long length) throws java.io.IOException {
                return child.status(offset, length);
            }

            @Override
            public jblockd.block.Capabilities capabilities() {
                return child.capabilities();
            }

            @Override
            public void close() {
            }

            @Override
            public String filename() {
                return child.driver().filename();
            }
        };
        return new BlockNode("throwing", false, d, false, false);
    }

    @Test
    void aCopyBeforeWriteThatThrowsMidCopyReleasesEveryClaimItTook() throws Exception {
        int size = 3 * CLUSTER;
        java.util.concurrent.atomic.AtomicReference<Throwable> armed = new java.util.concurrent.atomic.AtomicReference<>();
        BlockNode src = throwingOnRead(file("s", size, (byte) 5), armed);
        BlockNode tgt = file("t", size, (byte) 0);
        // one-cluster chunks: a guest write over all three clusters takes three claims
        BlockCopy copy = new BlockCopy(src, tgt, size, CLUSTER, CLUSTER, 2, false);
        armed.set(new IllegalStateException("driver bug"));
        org.assertj.core.api.Assertions.assertThatThrownBy(() -> copy.copyBeforeWrite(0, size))
                .isInstanceOf(IllegalStateException.class);
        // Nothing is left in flight: every cluster is dirty again and claimable, and a guest write
        // over the range copies it instead of waiting for a copy that will never end.
        assertThat(copy.claimNext(0)).isEqualTo(new BlockCopy.Claim(0, 1));
        copy.release(new BlockCopy.Claim(0, 1), false);
        CountDownLatch done = new CountDownLatch(1);
        Thread guest = Thread.ofVirtual().start(() -> {
            try {
                copy.copyBeforeWrite(0, size);
                done.countDown();
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        assertThat(done.await(10, TimeUnit.SECONDS)).as("a later guest write waits on a leaked claim").isTrue();
        guest.join();
        assertThat(Files.readAllBytes(dir.resolve("t"))).containsOnly((byte) 5);
    }

    @Test
    void copyAndReleaseEndsTheClaimEvenWhenAnErrorIsThrown() throws Exception {
        int size = 2 * CLUSTER;
        java.util.concurrent.atomic.AtomicReference<Throwable> armed = new java.util.concurrent.atomic.AtomicReference<>();
        BlockNode src = throwingOnRead(file("s", size, (byte) 5), armed);
        BlockNode tgt = file("t", size, (byte) 0);
        BlockCopy copy = new BlockCopy(src, tgt, size, CLUSTER, 2 * CLUSTER, 2, false);
        armed.set(new OutOfMemoryError("simulated"));
        BlockCopy.Claim c = copy.claimNext(0);
        org.assertj.core.api.Assertions.assertThatThrownBy(() -> copy.copyAndRelease(c))
                .isInstanceOf(OutOfMemoryError.class);
        assertThat(copy.claimNext(0)).as("the claim is dirty again, not in flight").isEqualTo(c);
    }

    /**
     * The job's copy asks the target to write back every WRITEBACK_STEP bytes while no guest
     * writes through the filter, and not at all while one does (its writes would queue behind).
     */
    @Test
    void writeBackHintsGoToTheTargetOnlyWhileNoGuestWrites() throws Exception {
        int size = (int) (4 * BlockCopy.WRITEBACK_STEP);
        BlockNode src = file("s", size, (byte) 1);
        BlockNode t1 = GatedDriver.over(file("t1", size, (byte) 0), "g1");
        BlockNode t2 = GatedDriver.over(file("t2", size, (byte) 0), "g2");

        copyAll(new BlockCopy(src, t1, size, CLUSTER, BlockCopy.MAX_CHUNK, 1, false));
        assertThat(GatedDriver.of(t1).writebacks.get()).as("one hint per step").isEqualTo(4);

        BlockCopy withGuest = new BlockCopy(src, t2, size, CLUSTER, BlockCopy.MAX_CHUNK, 1, false);
        withGuest.guestBegin(); // a guest request in the filter for the whole copy
        copyAll(withGuest);
        withGuest.guestEnd();
        assertThat(GatedDriver.of(t2).writebacks.get()).isZero();
        ByteBuffer last = ByteBuffer.allocate(CLUSTER);
        t2.read(size - CLUSTER, last);
        assertThat(last.array()).as("the copy itself is whole").containsOnly((byte) 1);
    }

    private static void copyAll(BlockCopy copy) throws Exception {
        BlockCopy.Claim c;
        while ((c = copy.claimNext(0)) != null) {
            copy.copyAndRelease(c);
        }
    }
}
