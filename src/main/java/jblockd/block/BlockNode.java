package jblockd.block;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.Objects;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

/**
 * A named node of the block graph over one {@link BlockDriver}. The node is the generic layer
 * (nbdkit's backend.c, QEMU's block/io.c): it checks ranges and read-only state, counts
 * requests in flight so a graph change can drain them, and then calls the driver.
 * Thread-safe.
 */
public final class BlockNode {
    private final String nodeName;
    private final boolean autoNamed;
    private final BlockDriver driver;
    private final Capabilities caps;
    private final boolean readOnly;
    /** discard=unmap (QEMU's BDRV_O_UNMAP): discards and unmapping zero writes reach the driver. */
    private final boolean unmap;

    private final ReentrantLock drainLock = new ReentrantLock();
    private final Condition idle = drainLock.newCondition();
    private final AtomicInteger inFlight = new AtomicInteger();
    /** Threads waiting in {@link #drain()}. */
    private final AtomicInteger drainers = new AtomicInteger();
    private volatile boolean closed;

    /** A node that passes discards on (filters the jobs insert: their children decide). */
    public BlockNode(String nodeName, boolean autoNamed, BlockDriver driver, boolean readOnly) {
        this(nodeName, autoNamed, driver, readOnly, true);
    }

    /**
     * @param unmap the node's {@code discard} option is {@code unmap}; with {@code ignore} (QEMU's
     *              default) a discard does nothing and succeeds, and zero writes keep allocation,
     *              as block/io.c bdrv_co_pdiscard / bdrv_co_pwrite_zeroes do
     */
    public BlockNode(String nodeName, boolean autoNamed, BlockDriver driver, boolean readOnly, boolean unmap) {
        this.unmap = unmap;
        this.nodeName = Objects.requireNonNull(nodeName);
        this.autoNamed = autoNamed;
        this.driver = Objects.requireNonNull(driver);
        this.caps = driver.capabilities();
        this.readOnly = readOnly || caps.readOnly();
    }

    public String nodeName() {
        return nodeName;
    }

    /** True when the graph generated the name ({@code #blockNNN}). */
    public boolean autoNamed() {
        return autoNamed;
    }

    public BlockDriver driver() {
        return driver;
    }

    public Capabilities capabilities() {
        return caps;
    }

    public boolean readOnly() {
        return readOnly;
    }

    /** The node's discard option is unmap (discards reach the driver). */
    public boolean unmap() {
        return unmap;
    }

    public long length() throws IOException {
        return driver.length();
    }

    public void read(long offset, ByteBuffer dst) throws IOException {
        checkRange(offset, dst.remaining());
        enter();
        try {
            driver.read(offset, dst);
        } finally {
            leave();
        }
    }

    public void write(long offset, ByteBuffer src, boolean fua) throws IOException {
        checkWritable();
        checkRange(offset, src.remaining());
        enter();
        try {
            driver.write(offset, src, fua);
        } finally {
            leave();
        }
    }

    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        checkWritable();
        checkRange(offset, length);
        if (length == 0) {
            return;
        }
        enter();
        try {
            driver.writeZeroes(offset, length, mayUnmap && unmap);
        } finally {
            leave();
        }
    }

    public void discard(long offset, long length) throws IOException {
        checkWritable();
        checkRange(offset, length);
        if (length == 0 || !unmap) {
            return; // discard=ignore: "Do nothing if disabled" (bdrv_co_pdiscard)
        }
        enter();
        try {
            driver.discard(offset, length);
        } finally {
            leave();
        }
    }

    public void flush() throws IOException {
        checkOpen();
        enter();
        try {
            driver.flush();
        } finally {
            leave();
        }
    }

    /** Status of the run starting at {@code offset}, at most {@code length} long (length > 0). */
    public Extent status(long offset, long length) throws IOException {
        checkRange(offset, length);
        if (length == 0) {
            throw new IoError(Errno.EINVAL, "empty status request");
        }
        enter();
        try {
            return driver.status(offset, length);
        } finally {
            leave();
        }
    }

    /** Blocks until no request is in flight on this node (new ones may start afterwards). */
    public void drain() {
        drainers.incrementAndGet();
        drainLock.lock();
        try {
            while (inFlight.get() > 0) {
                idle.awaitUninterruptibly();
            }
        } finally {
            drainLock.unlock();
            drainers.decrementAndGet();
        }
    }

    /** Drains, then closes the driver. Idempotent. Children are closed by the graph. */
    public void close() throws IOException {
        if (closed) {
            return;
        }
        drain();
        closed = true;
        driver.close();
    }

    public boolean isClosed() {
        return closed;
    }

    private void enter() throws IoError {
        checkOpen();
        inFlight.incrementAndGet();
    }

    private void leave() {
        // Only a drain() waiting needs the lock and the signal; the hot path stays lock-free.
        // drainers is raised before drain() reads inFlight, and read here after the decrement:
        // with both volatile one of the two sides sees the other, so no wake-up is lost.
        if (inFlight.decrementAndGet() == 0 && drainers.get() > 0) {
            drainLock.lock();
            try {
                idle.signalAll();
            } finally {
                drainLock.unlock();
            }
        }
    }

    private void checkOpen() throws IoError {
        if (closed) {
            throw new IoError(Errno.EIO, "node '" + nodeName + "' is closed");
        }
    }

    private void checkWritable() throws IoError {
        if (readOnly) {
            throw new IoError(Errno.EPERM, "node '" + nodeName + "' is read-only");
        }
    }

    private void checkRange(long offset, long length) throws IOException {
        checkOpen();
        if (offset < 0 || length < 0 || offset > Long.MAX_VALUE - length) {
            throw new IoError(Errno.EINVAL, "invalid range " + offset + "+" + length);
        }
        if (caps.growable()) {
            return;
        }
        long size = driver.length();
        if (offset < 0 || length < 0 || offset > size || length > size - offset) {
            throw new IoError(Errno.EINVAL, "Operation past EOF; From: " + offset + ", Len: " + length
                    + ", Size: " + size);
        }
    }

    @Override
    public String toString() {
        return nodeName + "(" + driver.driverName() + ")";
    }
}
