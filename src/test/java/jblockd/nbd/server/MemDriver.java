package jblockd.nbd.server;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.Arrays;

import jblockd.block.Allocation;
import jblockd.block.BlockDriver;
import jblockd.block.BlockNode;
import jblockd.block.Capabilities;
import jblockd.block.Errno;
import jblockd.block.Extent;
import jblockd.block.IoError;

/**
 * A small in-memory format-like driver for tests: 64 KiB blocks, each DATA, ZERO or UNALLOCATED
 * (reads go to the backing node), and error injection (errno for the next reads/writes).
 */
final class MemDriver implements BlockDriver {
    static final int BLOCK = 64 * 1024;
    private final byte[] data;
    private final Allocation[] state;
    private final BlockNode backing;
    volatile Errno failWrites;
    volatile Errno failReads;
    volatile int failCount;

    MemDriver(int size, BlockNode backing) {
        this.data = new byte[size];
        this.state = new Allocation[(size + BLOCK - 1) / BLOCK];
        Arrays.fill(state, Allocation.UNALLOCATED);
        this.backing = backing;
    }

    synchronized void set(int block, Allocation a, byte fill) {
        state[block] = a;
        Arrays.fill(data, block * BLOCK, Math.min(data.length, (block + 1) * BLOCK), a == Allocation.DATA ? fill : 0);
    }

    private void maybeFail(Errno e) throws IoError {
        if (e != null) {
            synchronized (this) {
                if (failCount > 0) {
                    failCount--;
                    throw IoError.of(e);
                }
            }
        }
    }

    @Override
    public String driverName() {
        return "mem";
    }

    @Override
    public synchronized void read(long offset, ByteBuffer dst) throws IOException {
        maybeFail(failReads);
        while (dst.hasRemaining()) {
            int b = (int) (offset / BLOCK);
            int n = (int) Math.min(dst.remaining(), (long) (b + 1) * BLOCK - offset);
            if (state[b] == Allocation.UNALLOCATED && backing != null && offset < backing.length()) {
                ByteBuffer part = dst.slice(dst.position(), (int) Math.min(n, backing.length() - offset));
                backing.read(offset, part);
                dst.position(dst.position() + part.capacity());
                offset += part.capacity();
                continue;
            }
            dst.put(data, (int) offset, n);
            offset += n;
        }
    }

    @Override
    public synchronized void write(long offset, ByteBuffer src, boolean fua) throws IOException {
        maybeFail(failWrites);
        long end = offset + src.remaining();
        for (long b = offset / BLOCK; b * BLOCK < end; b++) {
            if (state[(int) b] != Allocation.DATA) {
                ByteBuffer old = ByteBuffer.allocate(BLOCK);
                old.limit((int) Math.min(BLOCK, data.length - b * BLOCK));
                read(b * BLOCK, old);
                System.arraycopy(old.array(), 0, data, (int) (b * BLOCK), old.limit());
                state[(int) b] = Allocation.DATA;
            }
        }
        src.get(data, (int) offset, src.remaining());
    }

    @Override
    public synchronized void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        write(offset, ByteBuffer.allocate((int) length), false);
    }

    @Override
    public void discard(long offset, long length) {
    }

    @Override
    public void flush() {
    }

    @Override
    public long length() {
        return data.length;
    }

    @Override
    public synchronized Extent status(long offset, long length) {
        int b = (int) (offset / BLOCK);
        Allocation a = state[b];
        long end = offset;
        while (end < offset + length && state[(int) (end / BLOCK)] == a) {
            end = (end / BLOCK + 1) * BLOCK;
        }
        return new Extent(offset, Math.min(end, offset + length) - offset, a);
    }

    @Override
    public Capabilities capabilities() {
        return new Capabilities(false, true, true, true, 1, false);
    }

    @Override
    public void close() {
    }

    @Override
    public String filename() {
        return "mem";
    }

    @Override
    public boolean supportsBacking() {
        return true; // format-like: its unallocated blocks read from the backing node, zeroes without one
    }

    @Override
    public BlockNode backing() {
        return backing;
    }
}
