package jblockd.commands;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;

import jblockd.block.Allocation;
import jblockd.block.BlockChild;
import jblockd.block.BlockDriver;
import jblockd.block.BlockNode;
import jblockd.block.Capabilities;
import jblockd.block.Extent;

/**
 * A minimal copy-on-write format for in-JVM tests of the chain logic until the qcow2 driver is
 * merged: data lives at the same offsets in a file node, an in-memory bitmap at 64 KiB clusters
 * says what this layer holds, unallocated ranges read from the backing node (or zeroes).
 * Partial-cluster writes first copy the cluster up from the backing, as qcow2 does.
 */
final class CowTestDriver implements BlockDriver {
    static final int CLUSTER = 65536;
    private final BlockNode file;
    private final long size;
    private final BitSet allocated = new BitSet();
    private volatile BlockNode backing;
    volatile String backingName;
    volatile String backingFormat;

    CowTestDriver(BlockNode file, long size, BlockNode backing) {
        this.file = file;
        this.size = size;
        this.backing = backing;
        this.backingName = backing == null ? null : backing.driver().filename();
    }

    public String driverName() {
        return "cowtest";
    }

    private synchronized boolean isAllocated(long cluster) {
        return allocated.get((int) cluster);
    }

    public void read(long offset, ByteBuffer dst) throws IOException {
        long pos = offset;
        while (dst.hasRemaining()) {
            long c = pos / CLUSTER;
            int n = (int) Math.min(dst.remaining(), (c + 1) * CLUSTER - pos);
            ByteBuffer part = dst.slice(dst.position(), n);
            if (isAllocated(c)) {
                file.read(pos, part);
            } else if (backing != null && pos < backing.length()) {
                backing.read(pos, part);
            } else {
                while (part.hasRemaining()) {
                    part.put((byte) 0);
                }
            }
            dst.position(dst.position() + n);
            pos += n;
        }
    }

    public synchronized void write(long offset, ByteBuffer src, boolean fua) throws IOException {
        long pos = offset;
        while (src.hasRemaining()) {
            long c = pos / CLUSTER;
            int n = (int) Math.min(src.remaining(), (c + 1) * CLUSTER - pos);
            if (!allocated.get((int) c) && n < CLUSTER) {
                ByteBuffer whole = ByteBuffer.allocate(CLUSTER);
                read(c * CLUSTER, whole);
                whole.flip();
                file.write(c * CLUSTER, whole, false);
            }
            ByteBuffer part = src.slice(src.position(), n);
            file.write(pos, part, false);
            allocated.set((int) c);
            src.position(src.position() + n);
            pos += n;
        }
    }

    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        ByteBuffer z = ByteBuffer.allocate((int) length);
        write(offset, z, false);
    }

    public void discard(long offset, long length) {
    }

    public void flush() throws IOException {
        file.flush();
    }

    public long length() {
        return size;
    }

    public synchronized Extent status(long offset, long length) {
        long c = offset / CLUSTER;
        boolean a = allocated.get((int) c);
        long end = offset + length;
        long pos = (c + 1) * CLUSTER;
        while (pos < end && allocated.get((int) (pos / CLUSTER)) == a) {
            pos += CLUSTER;
        }
        return new Extent(offset, Math.min(end, pos) - offset, a ? Allocation.DATA : Allocation.UNALLOCATED);
    }

    public Capabilities capabilities() {
        return new Capabilities(false, true, true, true, 1, false);
    }

    public void close() {
    }

    public String filename() {
        return file.driver().filename();
    }

    public List<BlockChild> children() {
        List<BlockChild> c = new ArrayList<>();
        c.add(new BlockChild("file", file));
        if (backing != null) {
            c.add(new BlockChild("backing", backing));
        }
        return c;
    }

    public BlockNode backing() {
        return backing;
    }

    public void setBacking(BlockNode newBacking, String name, String format) {
        this.backing = newBacking;
        this.backingName = name;
        this.backingFormat = format;
    }

    /** The link alone, the header (name, format) kept: a job's filter going in or out. */
    @Override
    public void linkBacking(BlockNode newBacking) {
        this.backing = newBacking;
    }

    public String formatName() {
        return "cowtest";
    }
}
