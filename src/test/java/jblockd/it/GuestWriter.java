package jblockd.it;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.atomic.AtomicLong;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * A guest that keeps writing 64 KiB blocks over NBD and remembers what it was told is durable:
 * a write acknowledged with FUA, or a plain write followed by a flush that succeeded. A block's
 * later content must be one of: the last durable write, a write that was in flight or merely
 * acknowledged without flush since then (a crash may or may not have kept it), or, if nothing
 * was durable yet, the initial content. Runs on its own thread until {@link #stop} or an I/O
 * error (the daemon died).
 */
final class GuestWriter implements AutoCloseable {
    static final int BLOCK = 64 * 1024;

    private final RawNbdClient nbd;
    private final int blocks;
    /** Per block: the seq of the last durable write (-1: initial content). */
    private final long[] durable;
    /** Per block: seqs written since the last durable point (may or may not have survived). */
    private final List<List<Long>> maybe = new ArrayList<>();
    private final Thread thread;
    private final AtomicLong acked = new AtomicLong();
    private volatile boolean stop;
    private volatile Throwable ended;

    GuestWriter(Path socket, String export, long seed) throws IOException {
        this.nbd = new RawNbdClient(socket, export);
        this.blocks = (int) (nbd.size / BLOCK);
        this.durable = new long[blocks];
        java.util.Arrays.fill(durable, -1);
        for (int i = 0; i < blocks; i++) {
            maybe.add(new ArrayList<>());
        }
        this.thread = Thread.ofPlatform().name("guest-writer").start(() -> loop(seed));
    }

    static byte[] payload(int block, long seq) {
        byte[] b = new byte[BLOCK];
        java.util.Arrays.fill(b, (byte) (seq * 7 + block + 1));
        ByteBuffer.wrap(b).putLong(0, seq).putInt(8, block);
        return b;
    }

    private void loop(long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        long seq = 0;
        List<Integer> unflushed = new ArrayList<>();
        try {
            while (!stop) {
                int block = r.nextInt(blocks);
                seq++;
                boolean fua = r.nextBoolean();
                synchronized (this) {
                    maybe.get(block).add(seq);
                }
                nbd.write((long) block * BLOCK, payload(block, seq), fua);
                acked.incrementAndGet();
                if (fua) {
                    markDurable(block, seq);
                } else {
                    unflushed.add(block);
                    if (unflushed.size() >= 4) {
                        nbd.flush();
                        for (int b : unflushed) {
                            synchronized (this) {
                                List<Long> m = maybe.get(b);
                                if (!m.isEmpty()) { // else a later FUA write already made it durable
                                    markDurable(b, m.get(m.size() - 1));
                                }
                            }
                        }
                        unflushed.clear();
                    }
                }
            }
        } catch (Throwable t) {
            ended = t;
        }
    }

    private synchronized void markDurable(int block, long seq) {
        durable[block] = seq;
        maybe.get(block).removeIf(s -> s <= seq);
    }

    /** Writes acknowledged so far. */
    long acked() {
        return acked.get();
    }

    /** Why the writer stopped by itself (null while running or after {@link #stop}). */
    Throwable ended() {
        return ended;
    }

    boolean isRunning() {
        return thread.isAlive();
    }

    void stop() throws InterruptedException {
        stop = true;
        thread.join(10_000);
    }

    /**
     * Asserts that {@code content} (the whole disk) holds every durable write, and that every
     * other block is either initial content ({@code initial}) or some write the guest issued.
     */
    synchronized void verify(byte[] content, byte[] initial) {
        assertThat(thread.isAlive()).as("writer stopped before verify").isFalse();
        assertThat(content.length).isGreaterThanOrEqualTo(blocks * BLOCK);
        for (int b = 0; b < blocks; b++) {
            byte[] got = java.util.Arrays.copyOfRange(content, b * BLOCK, (b + 1) * BLOCK);
            List<byte[]> allowed = new ArrayList<>();
            allowed.add(durable[b] < 0 ? java.util.Arrays.copyOfRange(initial, b * BLOCK, (b + 1) * BLOCK)
                    : payload(b, durable[b]));
            for (long s : maybe.get(b)) {
                allowed.add(payload(b, s));
            }
            boolean ok = allowed.stream().anyMatch(a -> java.util.Arrays.equals(a, got));
            long gotSeq = ByteBuffer.wrap(got).getLong(0);
            assertThat(ok).as("block %d: durable seq %d, maybe %s, found seq %d (first byte %02x)", b,
                    durable[b], maybe.get(b), gotSeq, got[16]).isTrue();
        }
    }

    @Override
    public void close() throws IOException {
        stop = true;
        try {
            nbd.close();
        } finally {
            try {
                thread.join(10_000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }
}
