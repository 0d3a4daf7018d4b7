package jblockd.block.qcow2;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.LongPredicate;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.ImageCreator;

/**
 * A read that looked up host cluster H for guest offset A must not read H after H was freed
 * (A discarded, or rewritten by copy-on-write) and handed to another guest offset B: it would
 * return B's data as A's.
 */
class Qcow2ReadRaceTest {
    private static final int CS = 4096;
    private static final long A = 0;
    private static final long B = 100L * CS;

    @TempDir
    Path dir;

    /**
     * A host file whose reads can be held up, to open the window between a read's lookup of an
     * L2 entry and its read of the host cluster.
     */
    private static final class PausingFile implements HostFile {
        private final HostFile inner;
        volatile LongPredicate pauseAt = off -> false;
        volatile Runnable pause = () -> { };

        PausingFile(HostFile inner) {
            this.inner = inner;
        }

        @Override
        public void read(long offset, ByteBuffer dst) throws IOException {
            if (pauseAt.test(offset)) {
                pause.run();
            }
            inner.read(offset, dst);
        }

        @Override
        public void write(long offset, ByteBuffer src) throws IOException {
            inner.write(offset, src);
        }

        /** Durability is not what these tests are about: no fsync (thousands of them would be slow). */
        @Override
        public void flush() {
        }

        @Override
        public long length() throws IOException {
            return inner.length();
        }
    }

    private static byte[] filled(int b) {
        byte[] d = new byte[CS];
        Arrays.fill(d, (byte) b);
        return d;
    }

    private FileChannel image() throws IOException {
        Path img = dir.resolve("race.qcow2");
        Qcow2Creator.create(new ImageCreator.Options(img, 1 << 20, null, null, CS, false));
        return FileChannel.open(img, StandardOpenOption.READ, StandardOpenOption.WRITE);
    }

    /**
     * The reader is held inside its read of A's host cluster until the other thread has
     * discarded A, flushed (which frees the cluster) and written B (which reuses it), or is
     * blocked trying to.
     */
    @Test
    void readOfADiscardedClusterNeverReturnsTheDataThatReusedIt() throws Exception {
        try (FileChannel ch = image()) {
            PausingFile file = new PausingFile(HostFile.of(ch));
            Qcow2Driver d = Qcow2Driver.openOn(null, file, false, Metadata.DEFAULT_CACHE_BYTES, false);
            d.write(A, ByteBuffer.wrap(filled(0xaa)), false);
            d.flush();
            long lengthBefore = ch.size();

            CountDownLatch inside = new CountDownLatch(1);
            AtomicReference<Thread> other = new AtomicReference<>();
            // A's L2 table is cached: the reader's only file read is A's data.
            file.pauseAt = off -> Thread.currentThread().getName().equals("reader");
            file.pause = () -> {
                file.pauseAt = off -> false;
                inside.countDown();
                // Until the other thread is done, or parked on a lock this read holds.
                Thread t;
                while ((t = other.get()) == null || t.getState() != Thread.State.TERMINATED
                        && t.getState() != Thread.State.WAITING) {
                    Thread.onSpinWait();
                }
            };
            byte[] seen = new byte[CS];
            AtomicReference<Throwable> failure = new AtomicReference<>();
            Thread reader = Thread.ofPlatform().name("reader").start(() -> {
                try {
                    d.read(A, ByteBuffer.wrap(seen));
                } catch (Throwable e) {
                    failure.set(e);
                }
            });
            inside.await();
            Thread writer = Thread.ofPlatform().unstarted(() -> {
                try {
                    d.discard(A, CS);
                    d.flush();
                    d.write(B, ByteBuffer.wrap(filled(0xbb)), false);
                } catch (Throwable e) {
                    failure.set(e);
                }
            });
            other.set(writer);
            writer.start();
            reader.join();
            writer.join();
            assertThat(failure.get()).isNull();
            assertThat(ch.size()).as("B reused A's freed cluster (else this test proves nothing)")
                    .isEqualTo(lengthBefore);
            assertThat(seen).as("the read of A returns A's data or zeroes, never B's").doesNotContain((byte) 0xbb);
            assertThat(seen[0] & 0xff).isIn(0xaa, 0);
            assertThat(seen).containsOnly(seen[0]);
            d.close();
        }
    }

    /**
     * Readers of A race a writer that keeps allocating A, unmapping it (discard or zero-write
     * with unmap), flushing (which frees the cluster) and writing B, which reuses it: no read of
     * A may ever see B's pattern.
     */
    @Test
    void racingReadsOfAFreedClusterNeverSeeAnotherOffsetsData() throws Exception {
        try (FileChannel ch = image()) {
            PausingFile file = new PausingFile(HostFile.of(ch));
            Qcow2Driver d = Qcow2Driver.openOn(null, file, false, Metadata.DEFAULT_CACHE_BYTES, false);
            // Widen the window between a reader's lookup and its data read.
            file.pauseAt = off -> Thread.currentThread().getName().startsWith("reader");
            file.pause = () -> {
                for (int i = 0; i < 20; i++) {
                    Thread.yield();
                }
            };
            AtomicBoolean stop = new AtomicBoolean();
            AtomicReference<Throwable> failure = new AtomicReference<>();
            List<Thread> readers = new ArrayList<>();
            for (int t = 0; t < 2; t++) {
                readers.add(Thread.ofPlatform().name("reader-" + t).start(() -> {
                    byte[] seen = new byte[CS];
                    try {
                        while (!stop.get() && failure.get() == null) {
                            d.read(A, ByteBuffer.wrap(seen));
                            for (byte b : seen) {
                                if ((b & 0xf0) == 0xb0) {
                                    throw new AssertionError("a read of A returned B's data 0x"
                                            + Integer.toHexString(b & 0xff));
                                }
                            }
                        }
                    } catch (Throwable e) {
                        failure.compareAndSet(null, e);
                    }
                }));
            }
            try {
                for (int round = 0; round < 1500 && failure.get() == null; round++) {
                    d.write(A, ByteBuffer.wrap(filled(0xa0 | (round & 0xf))), false);
                    if (round % 2 == 0) {
                        d.discard(A, CS);
                    } else {
                        d.writeZeroes(A, CS, true);
                    }
                    d.flush(); // frees A's cluster
                    d.write(B, ByteBuffer.wrap(filled(0xb0 | (round & 0xf))), false); // reuses it
                    d.discard(B, CS);
                    d.flush();
                }
            } finally {
                stop.set(true);
                for (Thread t : readers) {
                    t.join();
                }
            }
            assertThat(failure.get()).isNull();
            d.close();
        }
    }
}
