package jblockd.block;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.util.Objects;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

import jblockd.block.bitmap.NodeBitmaps;
import jblockd.block.bitmap.PersistentBitmapStore;

/**
 * A named node of the block graph over one {@link BlockDriver}. The node is the generic layer
 * (nbdkit's backend.c, QEMU's block/io.c): it checks ranges and read-only state, counts
 * requests in flight so a graph change can drain them, and then calls the driver. It also owns
 * the node's dirty bitmaps ({@link #bitmaps()}) and records every data-changing request that
 * reached its driver in them: whatever path a request takes (NBD, a job's filter above, a job
 * writing to its target), it passes here, so this is the one place that marks.
 * Thread-safe.
 */
public final class BlockNode {
    private final String nodeName;
    private final boolean autoNamed;
    /**
     * What the node is opened as: one immutable object, replaced as a whole by {@link #reopen}
     * while the node is quiesced, so a request sees one driver with its flags.
     *
     * @param unmap   discard=unmap (QEMU's BDRV_O_UNMAP): discards and unmapping zero writes
     *                reach the driver
     * @param options what the node was opened with (null: a node built outside the graph, a
     *                job's filter, which cannot be reopened)
     */
    public record Opened(BlockDriver driver, Capabilities caps, boolean readOnly, boolean unmap,
                         BlockdevOptions options) {
    }

    private volatile Opened state;
    /** Set while {@link #reopen} swaps the driver: new requests wait in {@link #enter()}. */
    private volatile boolean quiesced;

    private final ReentrantLock drainLock = new ReentrantLock();
    private final Condition idle = drainLock.newCondition();
    private final AtomicInteger inFlight = new AtomicInteger();
    /** Threads waiting in {@link #drain()}. */
    private final AtomicInteger drainers = new AtomicInteger();
    private volatile boolean closed;
    private final NodeBitmaps bitmaps;
    /** Set while a copy into this node must wait for its reads in flight (a fleecing scratch). */
    private volatile TrackedReads trackedReads;
    private final NodeStats stats = new NodeStats();
    private final WriteThreshold writeThreshold = new WriteThreshold();

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
        this(nodeName, autoNamed, driver, readOnly, unmap, null);
    }

    /** As above, remembering the {@code options} the graph opened the node with (for reopen). */
    public BlockNode(String nodeName, boolean autoNamed, BlockDriver driver, boolean readOnly, boolean unmap,
                     BlockdevOptions options) {
        this.nodeName = Objects.requireNonNull(nodeName);
        this.autoNamed = autoNamed;
        Capabilities caps = Objects.requireNonNull(driver).capabilities();
        this.state = new Opened(driver, caps, readOnly || caps.readOnly(), unmap, options);
        this.bitmaps = new NodeBitmaps(nodeName, () -> this.state.driver().length(), this.state.readOnly(),
                caps.growable(), caps.requestAlignment());
        java.util.Optional<PersistentBitmapStore> store = driver.persistentBitmaps();
        if (store.isPresent()) {
            try {
                bitmaps.attachStore(store.get());
            } catch (IOException e) {
                // NodeGraph.open unwraps it: the open fails with this message
                throw new UncheckedIOException(e);
            }
        }
    }

    /** The node's dirty bitmaps (QMP's block-dirty-bitmap-*, jobs' successors and copy bitmaps). */
    public NodeBitmaps bitmaps() {
        return bitmaps;
    }

    /** The node's own counters (query-blockstats' node-level stats). */
    /** block-set-write-threshold's state for this node. */
    public WriteThreshold writeThreshold() {
        return writeThreshold;
    }

    public NodeStats stats() {
        return stats;
    }

    public String nodeName() {
        return nodeName;
    }

    /** True when the graph generated the name ({@code #blockNNN}). */
    public boolean autoNamed() {
        return autoNamed;
    }

    public BlockDriver driver() {
        return state.driver();
    }

    public Capabilities capabilities() {
        return state.caps();
    }

    public boolean readOnly() {
        return state.readOnly();
    }

    /** The node's discard option is unmap (discards reach the driver). */
    public boolean unmap() {
        return state.unmap();
    }

    /** The driver and flags the node runs with now, and the options it was opened with. */
    public Opened opened() {
        return state;
    }

    public long length() throws IOException {
        return state.driver().length();
    }

    /**
     * Stops new requests (they wait) and waits for those in flight: the node-level half of a
     * drained section, for {@link #reopen}. Until {@link #resume()} only the caller may use the
     * driver, and not through this node.
     */
    public void quiesce() {
        quiesced = true;
        drain();
    }

    /** Lets the requests held by {@link #quiesce()} go on, on the node as it is now. */
    public void resume() {
        drainLock.lock();
        try {
            quiesced = false;
            idle.signalAll();
        } finally {
            drainLock.unlock();
        }
    }

    /**
     * Replaces the node's driver and flags (blockdev-reopen's commit; QEMU keeps the
     * BlockDriverState and changes its flags and driver state in place, jblockd opens a new
     * driver over the same children): parents, users and bitmaps keep pointing at this node.
     * The caller has quiesced the node and closed or will close the old driver.
     */
    public void reopen(BlockDriver newDriver, boolean readOnly, boolean unmap, BlockdevOptions options) {
        if (!quiesced) {
            throw new IllegalStateException("reopen of " + nodeName + " without quiesce");
        }
        Capabilities caps = newDriver.capabilities();
        state = new Opened(newDriver, caps, readOnly || caps.readOnly(), unmap, options);
    }

    public void read(long offset, ByteBuffer dst) throws IOException {
        TrackedReads t = trackedReads;
        long ticket = -1; // tickets count up from 0
        enter();
        try {
            Opened s = state;
            checkRange(s, offset, dst.remaining());
            if (t != null) {
                ticket = t.begin(offset, dst.remaining());
            }
            s.driver().read(offset, dst);
        } finally {
            leave();
            if (ticket >= 0) {
                t.end(ticket);
            }
        }
    }

    /**
     * Registers every read of this node in {@code reads} from now on (null: stop). A backup
     * whose target reads through to its source (classic fleecing) sets it, so a guest write
     * waits for the target's readers before it changes the source (block-copy's serialising
     * writes into a fleecing target).
     */
    public void trackReads(TrackedReads reads) {
        this.trackedReads = reads;
    }

    public void write(long offset, ByteBuffer src, boolean fua) throws IOException {
        int len = src.remaining();
        Opened s = enterWrite(offset, len);
        try {
            writeThreshold.check(offset, len);
            String detect = s.options() == null ? "off" : s.options().common().detectZeroes();
            if (!detect.equals("off") && len > 0 && s.caps().canWriteZeroes() && allZero(src)) {
                // detect-zeroes: the driver writes zeroes its cheapest way (QEMU adds
                // BDRV_REQ_ZERO_WRITE, and BDRV_REQ_MAY_UNMAP for unmap, which discard=unmap
                // lets through); FUA as the write asked
                s.driver().writeZeroes(offset, len, detect.equals("unmap") && s.unmap());
                src.position(src.limit());
                if (fua) {
                    s.driver().flush();
                }
                return;
            }
            s.driver().write(offset, src, fua);
        } finally {
            stats.wrote(offset, len);
            // Marked after the driver call, whether it succeeded or not: QEMU's
            // bdrv_co_write_req_finish() sets the dirty bits for every tracked write and discard
            // it finishes, whatever ret is (a failed write may have changed part of the range).
            bitmaps.mark(offset, len);
            leave();
        }
    }

    /**
     * Enters the node for a request that changes data: the state it runs against, checked
     * writable and in range; on a failed check the node is left again and the error thrown.
     */
    private Opened enterWrite(long offset, long length) throws IOException {
        enter();
        Opened s = state;
        try {
            checkWritable(s);
            checkRange(s, offset, length);
        } catch (IOException e) {
            leave();
            throw e;
        }
        return s;
    }

    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        Opened s = enterWrite(offset, length);
        if (length == 0) {
            leave();
            return;
        }
        try {
            writeThreshold.check(offset, length);
            s.driver().writeZeroes(offset, length, mayUnmap && s.unmap());
        } finally {
            stats.wrote(offset, length);
            bitmaps.mark(offset, length); // see write()
            leave();
        }
    }

    public void discard(long offset, long length) throws IOException {
        Opened s = enterWrite(offset, length);
        if (length == 0 || !s.unmap() || !s.caps().canDiscard()) {
            // discard=ignore: "Do nothing if disabled"; a driver without discard is not asked
            // either (bdrv_co_pdiscard returns 0 before tracking the request, so neither
            // changes data nor marks a bitmap: QEMU's null-co has no discard)
            leave();
            return;
        }
        boolean ok = false;
        try {
            writeThreshold.check(offset, length);
            s.driver().discard(offset, length);
            ok = true;
        } finally {
            stats.discarded(length, ok);
            bitmaps.mark(offset, length); // see write()
            leave();
        }
    }

    /**
     * block/io.c bdrv_co_truncate(): the checks in QEMU's order, then the driver, then the
     * bitmaps follow the new length. The caller has quiesced the node's users (block_resize
     * drains); requests that arrive meanwhile still pass {@link #enter()}.
     */
    public void truncate(long size) throws IOException {
        if (size < 0) {
            throw new IoError(Errno.EINVAL, "Cannot truncate to a negative size");
        }
        if (size > MAX_LENGTH) {
            throw new IoError(Errno.EINVAL, "offset(" + size + ") exceeds maximum(" + MAX_LENGTH + ")");
        }
        enter();
        try {
            Opened s = state;
            if (s.readOnly()) {
                throw new IoError(Errno.EACCES, "Image is read-only");
            }
            s.driver().truncate(size);
            bitmaps.truncate(size);
        } finally {
            leave();
        }
    }

    /** util/iov.c buffer_is_zero(): every remaining byte is 0 (position unchanged). */
    static boolean allZero(ByteBuffer b) {
        int i = b.position();
        int end = b.limit();
        ByteBuffer o = b.duplicate().order(java.nio.ByteOrder.nativeOrder());
        for (; i + 8 <= end; i += 8) {
            if (o.getLong(i) != 0) {
                return false;
            }
        }
        for (; i < end; i++) {
            if (b.get(i) != 0) {
                return false;
            }
        }
        return true;
    }

    /** QEMU's BDRV_MAX_LENGTH: INT64_MAX aligned down to the largest request alignment (1 GiB). */
    public static final long MAX_LENGTH = Long.MAX_VALUE & ~((1L << 30) - 1);

    public void flush() throws IOException {
        enter();
        try {
            state.driver().flush();
        } finally {
            leave();
        }
    }

    /** {@link BlockDriver#startWriteback}: a hint, nothing is made durable. */
    public void startWriteback() throws IOException {
        enter();
        try {
            state.driver().startWriteback();
        } finally {
            leave();
        }
    }

    /** Status of the run starting at {@code offset}, at most {@code length} long (length > 0). */
    public Extent status(long offset, long length) throws IOException {
        enter();
        try {
            Opened s = state;
            checkRange(s, offset, length);
            if (length == 0) {
                throw new IoError(Errno.EINVAL, "empty status request");
            }
            return s.driver().status(offset, length);
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

    /**
     * Drains, stores the persistent dirty bitmaps (a clean close, as QEMU's inactivation), then
     * closes the driver. Idempotent. Children are closed by the graph, after their parents.
     */
    public void close() throws IOException {
        if (closed) {
            return;
        }
        drain();
        closed = true;
        bitmaps.storeOnClose();
        state.driver().close();
    }

    public boolean isClosed() {
        return closed;
    }

    /**
     * Counts the request in flight, first waiting while the node is quiesced. The flag is
     * read after the increment and {@link #quiesce()} reads the count after setting it: with
     * both volatile, either the request sees the flag and backs off, or the drain sees it.
     */
    private void enter() throws IoError {
        while (true) {
            checkOpen();
            inFlight.incrementAndGet();
            if (!quiesced) {
                return;
            }
            leave();
            drainLock.lock();
            try {
                while (quiesced && !closed) {
                    idle.awaitUninterruptibly();
                }
            } finally {
                drainLock.unlock();
            }
        }
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

    private void checkWritable(Opened s) throws IoError {
        if (s.readOnly()) {
            throw new IoError(Errno.EPERM, "node '" + nodeName + "' is read-only");
        }
    }

    private void checkRange(Opened s, long offset, long length) throws IOException {
        if (offset < 0 || length < 0 || offset > Long.MAX_VALUE - length) {
            throw new IoError(Errno.EINVAL, "invalid range " + offset + "+" + length);
        }
        if (s.caps().growable()) {
            return;
        }
        long size = s.driver().length();
        if (offset < 0 || length < 0 || offset > size || length > size - offset) {
            throw new IoError(Errno.EINVAL, "Operation past EOF; From: " + offset + ", Len: " + length
                    + ", Size: " + size);
        }
    }

    @Override
    public String toString() {
        return nodeName + "(" + state.driver().driverName() + ")";
    }
}
