package jblockd.block.cbw;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.List;
import java.util.Set;

import jblockd.block.Access;
import jblockd.block.BlockChild;
import jblockd.block.FilterDriver;
import jblockd.block.BlockNode;
import jblockd.block.Capabilities;
import jblockd.block.Extent;
import jblockd.block.Perm;

/**
 * The copy-before-write filter (QEMU block/copy-before-write.c): inserted above a backup's
 * source, it forwards everything to the source, but before a write, write-zeroes or discard
 * reaches the source it copies the old data of the affected clusters to the target through
 * {@link BlockCopy#copyBeforeWrite}. If that copy fails, the guest request fails with the copy's
 * error (QEMU's default on-cbw-error=break-guest-write; the device's werror then applies, not
 * the job's on-*-error — reference/backup.md §4.5).
 */
public final class CopyBeforeWriteDriver implements FilterDriver {
    private final BlockNode source;
    private final BlockCopy copy;

    public CopyBeforeWriteDriver(BlockNode source, BlockCopy copy) {
        this.source = source;
        this.copy = copy;
    }

    public BlockCopy blockCopy() {
        return copy;
    }

    public BlockNode source() {
        return source;
    }

    @Override
    public String driverName() {
        return "copy-before-write";
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        source.read(offset, dst);
    }

    @Override
    public void write(long offset, ByteBuffer src, boolean fua) throws IOException {
        copy.copyBeforeWrite(offset, src.remaining());
        source.write(offset, src, fua);
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        copy.copyBeforeWrite(offset, length);
        source.writeZeroes(offset, length, mayUnmap);
    }

    @Override
    public void discard(long offset, long length) throws IOException {
        copy.copyBeforeWrite(offset, length);
        source.discard(offset, length);
    }

    @Override
    public void flush() throws IOException {
        source.flush();
    }

    @Override
    public long length() throws IOException {
        return source.length();
    }

    @Override
    public Extent status(long offset, long length) throws IOException {
        return source.status(offset, length);
    }

    @Override
    public Capabilities capabilities() {
        Capabilities c = source.capabilities();
        // Never growable: the filter's length is the source's, and requests past it are errors.
        return new Capabilities(source.readOnly(), c.canDiscard(), c.canWriteZeroes(), c.canFua(),
                c.requestAlignment(), false);
    }

    @Override
    public void close() {
        // Children belong to the graph and the job.
    }

    @Override
    public String filename() {
        return source.driver().filename();
    }

    @Override
    public List<BlockChild> children() {
        return List.of(new BlockChild("file", source), new BlockChild("target", copy.target()));
    }

    /**
     * cbw_child_perm(): the target is written while the guest may write its backing chain, but
     * never resized; the source must read consistently, and nobody may write or resize it
     * except through this filter (that would bypass the copy).
     */
    @Override
    public Access childAccess(BlockChild child, boolean writable, Access parentUse) {
        if (child.node() != source) {
            Set<Perm> shares = Perm.all();
            shares.remove(Perm.RESIZE);
            return new Access(Perm.of(Perm.WRITE), shares);
        }
        Set<Perm> needs = Perm.none();
        needs.addAll(parentUse.needs());
        needs.add(Perm.CONSISTENT_READ);
        Set<Perm> shares = Perm.none();
        shares.addAll(parentUse.shares());
        shares.remove(Perm.WRITE);
        shares.remove(Perm.RESIZE);
        return new Access(needs, shares);
    }

    /** copy-before-write is a filter of its file child (block/copy-before-write.c). */
    @Override
    public BlockNode filtered() {
        return source;
    }
}
