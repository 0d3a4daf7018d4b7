package jblockd.job;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

import jblockd.block.BlockNode;
import jblockd.block.Capabilities;
import jblockd.block.Extent;
import jblockd.block.FilterDriver;

/**
 * A counting filter for job tests: counts every read and write that reaches it, can fail its
 * flushes ({@link #flushError}) and data writes ({@link #writeError}), and while its
 * gate is closed holds each one at the door (a request in flight, made to last as long as the
 * test wants, {@link #hold} / {@link #letGo}). {@link #awaitHeld} tells when a request is held.
 */
public final class GatedDriver implements FilterDriver {
    private final BlockNode child;
    public final AtomicInteger reads = new AtomicInteger();
    public final AtomicInteger writes = new AtomicInteger();
    /** Write-back hints ({@link BlockNode#startWriteback}) that reached this node. */
    public final AtomicInteger writebacks = new AtomicInteger();
    /** When set, every flush fails with it (a target that cannot make its data durable). */
    public volatile IOException flushError;
    /** When set, every data write fails with it (a target that is full or gone). */
    public volatile IOException writeError;
    private final AtomicReference<CountDownLatch> gate = new AtomicReference<>();
    /** While the gate is closed by {@link #holdWrites}, reads still pass. */
    private volatile boolean readsPass;
    private final AtomicInteger held = new AtomicInteger();
    private final Object heldChanged = new Object();

    public GatedDriver(BlockNode child) {
        this.child = child;
    }

    /** A node over {@code child} with this driver. */
    public static BlockNode over(BlockNode child, String name) {
        return new BlockNode(name, false, new GatedDriver(child), false, false);
    }

    public static GatedDriver of(BlockNode node) {
        return (GatedDriver) node.driver();
    }

    /** From now on requests wait at the door until {@link #letGo}. */
    public void hold() {
        readsPass = false;
        gate.set(new CountDownLatch(1));
    }

    /** Like {@link #hold}, for writes (and write-zeroes) only: reads go on through the gate. */
    public void holdWrites() {
        readsPass = true;
        gate.set(new CountDownLatch(1));
    }

    public void letGo() {
        CountDownLatch g = gate.getAndSet(null);
        if (g != null) {
            g.countDown();
        }
    }

    /** Waits until at least one request is held at the closed gate; false after 10 s. */
    public boolean awaitHeld() throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        synchronized (heldChanged) {
            while (held.get() == 0) {
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    return false;
                }
                TimeUnit.NANOSECONDS.timedWait(heldChanged, left);
            }
        }
        return true;
    }

    /** Requests that reached this node so far. */
    public int requests() {
        return reads.get() + writes.get();
    }

    private void door() throws IOException {
        CountDownLatch g = gate.get();
        if (g == null) {
            return;
        }
        held.incrementAndGet();
        synchronized (heldChanged) {
            heldChanged.notifyAll();
        }
        try {
            g.await();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted at the gate", e);
        } finally {
            held.decrementAndGet();
        }
    }

    @Override
    public void startWriteback() throws IOException {
        writebacks.incrementAndGet();
        child.startWriteback();
    }

    @Override
    public BlockNode filtered() {
        return child;
    }

    @Override
    public String driverName() {
        return "gated";
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        reads.incrementAndGet();
        if (!readsPass) {
            door();
        }
        child.read(offset, dst);
    }

    @Override
    public void write(long offset, ByteBuffer src, boolean fua) throws IOException {
        writes.incrementAndGet();
        door();
        IOException e = writeError;
        if (e != null) {
            throw e;
        }
        child.write(offset, src, fua);
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        writes.incrementAndGet();
        door();
        child.writeZeroes(offset, length, mayUnmap);
    }

    @Override
    public void discard(long offset, long length) throws IOException {
        writes.incrementAndGet();
        child.discard(offset, length);
    }

    @Override
    public void flush() throws IOException {
        IOException e = flushError;
        if (e != null) {
            throw e;
        }
        child.flush();
    }

    @Override
    public long length() throws IOException {
        return child.length();
    }

    @Override
    public Extent status(long offset, long length) throws IOException {
        return child.status(offset, length);
    }

    @Override
    public Capabilities capabilities() {
        return child.capabilities();
    }

    @Override
    public void close() {
        // the child is the test's
    }

    @Override
    public String filename() {
        return child.driver().filename();
    }
}
