package jblockd.block.bitmap;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.Optional;

import jblockd.block.BlockDriver;
import jblockd.block.Capabilities;
import jblockd.block.Errno;
import jblockd.block.Extent;
import jblockd.block.IoError;
import jblockd.block.Allocation;

/**
 * An in-memory disk for the bitmap tests: a byte array, a write that can be made to fail, an
 * optional persistent-bitmap store, a cluster size and a request alignment.
 */
final class TestDisk implements BlockDriver {
    private byte[] data;
    private final boolean growable;
    private final int alignment;
    private final int clusterSize;
    private final PersistentBitmapStore store;
    volatile boolean failWrites;
    volatile boolean closed;

    TestDisk(int size) {
        this(size, false, 1, 0, null);
    }

    TestDisk(int size, boolean growable, int alignment, int clusterSize, PersistentBitmapStore store) {
        this.data = new byte[size];
        this.growable = growable;
        this.alignment = alignment;
        this.clusterSize = clusterSize;
        this.store = store;
    }

    @Override
    public String driverName() {
        return "test-disk";
    }

    @Override
    public synchronized void read(long offset, ByteBuffer dst) {
        int n = dst.remaining();
        int avail = (int) Math.max(0, Math.min(n, data.length - offset));
        if (avail > 0) {
            dst.put(data, (int) offset, avail);
        }
        while (dst.hasRemaining()) {
            dst.put((byte) 0);
        }
    }

    @Override
    public synchronized void write(long offset, ByteBuffer src, boolean fua) throws IOException {
        if (failWrites) {
            src.position(src.position() + src.remaining() / 2); // half of it landed
            throw new IoError(Errno.EIO, "injected");
        }
        int n = src.remaining();
        if (offset + n > data.length) {
            data = java.util.Arrays.copyOf(data, (int) (offset + n));
        }
        src.get(data, (int) offset, n);
    }

    @Override
    public synchronized void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        if (failWrites) {
            throw new IoError(Errno.EIO, "injected");
        }
        java.util.Arrays.fill(data, (int) offset, (int) (offset + length), (byte) 0);
    }

    @Override
    public void discard(long offset, long length) {
        // content unspecified afterwards: keep it
    }

    @Override
    public void flush() {
    }

    @Override
    public synchronized long length() {
        return data.length;
    }

    @Override
    public Extent status(long offset, long length) {
        return new Extent(offset, length, Allocation.DATA);
    }

    @Override
    public Capabilities capabilities() {
        return new Capabilities(false, true, true, true, alignment, growable);
    }

    @Override
    public void close() {
        closed = true;
    }

    @Override
    public String filename() {
        return "test-disk";
    }

    @Override
    public int clusterSize() {
        return clusterSize;
    }

    @Override
    public Optional<PersistentBitmapStore> persistentBitmaps() {
        return Optional.ofNullable(store);
    }
}
