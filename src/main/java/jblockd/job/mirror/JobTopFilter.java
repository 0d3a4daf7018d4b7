package jblockd.job.mirror;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.List;
import java.util.Objects;

import jblockd.block.Access;
import jblockd.block.BlockChild;
import jblockd.block.FilterDriver;
import jblockd.block.BlockNode;
import jblockd.block.Capabilities;
import jblockd.block.Extent;
import jblockd.block.Perm;

/**
 * The filter a job puts above the node it works on, as the device's root, so that every guest
 * request passes it (QEMU's {@code mirror_top} and stream's {@code copy-on-read} filters), or,
 * as {@link #commitTop commit_top}, between the top of an intermediate commit and its overlay.
 * It forwards everything to its child and, depending on the job
 * (a mirror's dirty tracking is not here: the source node records every write that reaches it,
 * whatever path it took, see {@link jblockd.block.bitmap.NodeBitmaps#adopt}):
 * <ul>
 *   <li>holds {@link RangeLocks} around guest writes (stream: its copy-on-read of a chunk and
 *       a guest write to that chunk never interleave);</li>
 *   <li>can write guest writes through to a second node (a completed mirror between its final
 *       sync and its pivot, so guests never wait for the job to be finalized);</li>
 *   <li>can hand guest writes to an {@link ActiveCopy} (a mirror with
 *       {@code copy-mode=write-blocking}, which writes them to its target before they
 *       complete).</li>
 * </ul>
 * Thread-safe. The filter goes in and out of the graph in drained sections
 * ({@link jblockd.device.Devices#drain}), so no guest request is ever left on it afterwards.
 */
public final class JobTopFilter implements FilterDriver {
    private final String driverName;
    private final BlockNode child;
    private volatile BlockNode writeThrough;
    private volatile ActiveCopy activeCopy;
    private final RangeLocks locks;
    private volatile boolean implicit;
    /** False for commit_top: it takes nothing on its child and lets others do anything there. */
    private final boolean claimsChild;
    /** True for commit_top: it sits inside a backing chain, as the overlay's backing node. */
    private final boolean inChain;

    /**
     * A filter over a device's root.
     *
     * @param driverName {@code mirror_top} or {@code copy-on-read}
     * @param locks      serialises guest writes with the job's chunks, or null
     */
    public JobTopFilter(String driverName, BlockNode child, RangeLocks locks) {
        this(driverName, child, locks, true, false);
    }

    private JobTopFilter(String driverName, BlockNode child, RangeLocks locks, boolean claimsChild,
                         boolean inChain) {
        this.driverName = driverName;
        this.child = Objects.requireNonNull(child);
        this.locks = locks;
        this.claimsChild = claimsChild;
        this.inChain = inChain;
    }

    /**
     * QEMU's commit_top for a commit of {@code top}, a layer below the active one: it goes
     * between {@code top} and its overlay and takes no permission on {@code top}
     * (bdrv_commit_top_child_perm()), so the commit job may refuse consistent read on the layers
     * it empties into base while the overlay keeps reading through the filter.
     */
    public static JobTopFilter commitTop(BlockNode top) {
        return new JobTopFilter("commit_top", top, null, false, true);
    }

    @Override
    public Access childAccess(BlockChild c, boolean writable, Access parentUse) {
        return claimsChild ? Access.passthrough(parentUse)
                : new Access(Perm.none(), Perm.all());
    }

    /**
     * An implicit filter (no {@code filter-node-name}) is hidden from queries as QEMU's
     * bdrv_skip_implicit_filters() hides it: query-block then shows the child's format and
     * backing chain.
     */
    public JobTopFilter implicit(boolean value) {
        this.implicit = value;
        return this;
    }

    public BlockNode child() {
        return child;
    }

    /** Writes every later guest write to {@code node} as well, after the child (null: stop). */
    public void setWriteThrough(BlockNode node) {
        this.writeThrough = node;
    }

    /** A guest write (data, zeroes or discard), to be applied to a node. */
    public interface WriteOp {
        /** Applies the whole write to {@code node}. */
        void apply(BlockNode node) throws IOException;

        /** Applies the part {@code [from, from+length)} of it (within the write) to {@code node}. */
        void applyPart(BlockNode node, long from, long length) throws IOException;
    }

    /** A write op from one that writes any part of the request's range. */
    private static WriteOp over(long offset, long length, PartOp part) {
        return new WriteOp() {
            public void apply(BlockNode node) throws IOException {
                part.apply(node, offset, length);
            }

            public void applyPart(BlockNode node, long from, long len) throws IOException {
                part.apply(node, from, len);
            }
        };
    }

    private interface PartOp {
        void apply(BlockNode node, long from, long length) throws IOException;
    }

    /** Takes over guest writes from the filter: applies them to the child, and to more. */
    public interface ActiveCopy {
        /** Applies {@code op} to {@code child} (its result is the guest's), and to what it copies to. */
        void write(BlockNode child, long offset, long length, WriteOp op) throws IOException;
    }

    /** Hands every later guest write to {@code copy} (null: the filter writes the child itself). */
    public void setActiveCopy(ActiveCopy copy) {
        this.activeCopy = copy;
    }

    private void guestWrite(long offset, long length, WriteOp op) throws IOException {
        RangeLocks l = locks;
        if (l != null) {
            l.lock(offset, length);
        }
        try {
            ActiveCopy active = activeCopy;
            if (active != null) {
                active.write(child, offset, length, op);
            } else {
                op.apply(child);
            }
            BlockNode second = writeThrough;
            if (second != null) {
                op.apply(second);
            }
        } finally {
            if (l != null) {
                l.unlock(offset, length);
            }
        }
    }

    @Override
    public String driverName() {
        return driverName;
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        child.read(offset, dst);
    }

    @Override
    public void write(long offset, ByteBuffer src, boolean fua) throws IOException {
        int pos = src.position();
        int len = src.remaining();
        guestWrite(offset, len, over(offset, len, (n, from, l) -> n.write(from,
                src.duplicate().position(pos + (int) (from - offset)).limit(pos + (int) (from - offset + l)), fua)));
        src.position(pos + len);
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        guestWrite(offset, length, over(offset, length, (n, from, l) -> n.writeZeroes(from, l, mayUnmap)));
    }

    @Override
    public void discard(long offset, long length) throws IOException {
        guestWrite(offset, length, over(offset, length, (n, from, l) -> n.discard(from, l)));
    }

    @Override
    public void flush() throws IOException {
        child.flush();
        BlockNode second = writeThrough;
        if (second != null) {
            second.flush();
        }
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
        Capabilities c = child.capabilities();
        // Never growable: guests must not write past the device's end through the filter.
        return new Capabilities(c.readOnly(), c.canDiscard(), c.canWriteZeroes(), c.canFua(),
                c.requestAlignment(), false);
    }

    @Override
    public void close() {
        // the child belongs to the graph
    }

    @Override
    public String filename() {
        return child.driver().filename();
    }

    @Override
    public List<BlockChild> children() {
        return List.of(new BlockChild("backing", child));
    }

    @Override
    public String formatName() {
        return implicit ? child.driver().formatName() : driverName;
    }

    /**
     * A filter over a device's root answers for its child's backing when implicit; commit_top,
     * inside the chain, is the link down to the committed top, so a walk down backing links
     * from the overlay still passes every layer.
     */
    @Override
    public BlockNode backing() {
        if (inChain) {
            return child;
        }
        return implicit ? child.driver().backing() : null;
    }

    /**
     * The job's child, implicit or not: query-named-block-nodes shows QEMU's filter nodes
     * (mirror_top, commit_top, copy-on-read) with their child as backing-image.
     */
    @Override
    public BlockNode filtered() {
        return child;
    }

    /** query-block skips an implicit filter (bdrv_skip_implicit_filters). */
    @Override
    public boolean implicitFilter() {
        return implicit;
    }
}
