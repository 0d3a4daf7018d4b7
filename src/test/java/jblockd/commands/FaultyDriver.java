package jblockd.commands;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;

import jblockd.block.BlockChild;
import jblockd.block.BlockDriver;
import jblockd.block.BlockNode;
import jblockd.block.Capabilities;
import jblockd.block.Errno;
import jblockd.block.Extent;
import jblockd.block.IoError;

/**
 * A fault-injecting filter for tests (blkdebug's inject-error in miniature): reads or writes
 * touching {@code [failOffset, failOffset+failLen)} fail with {@code errno} while
 * {@code remaining} is positive (negative: always).
 */
final class FaultyDriver implements BlockDriver {
    private final BlockNode child;
    volatile long failOffset = -1;
    volatile long failLen;
    volatile boolean onRead = true;
    volatile Errno errno = Errno.EIO;
    final AtomicInteger remaining = new AtomicInteger();
    final AtomicInteger failures = new AtomicInteger();

    FaultyDriver(BlockNode child) {
        this.child = child;
    }

    void arm(long offset, long len, boolean read, Errno e, int times) {
        failLen = len;
        onRead = read;
        errno = e;
        remaining.set(times);
        failOffset = offset;
    }

    private void check(long offset, long len, boolean read) throws IoError {
        long fo = failOffset;
        if (fo < 0 || read != onRead || offset >= fo + failLen || fo >= offset + len) {
            return;
        }
        int r = remaining.get();
        if (r == 0) {
            return;
        }
        if (r > 0 && !remaining.compareAndSet(r, r - 1)) {
            check(offset, len, read);
            return;
        }
        failures.incrementAndGet();
        throw IoError.of(errno);
    }

    public String driverName() {
        return "faulty";
    }

    public void read(long offset, ByteBuffer dst) throws IOException {
        check(offset, dst.remaining(), true);
        child.read(offset, dst);
    }

    public void write(long offset, ByteBuffer src, boolean fua) throws IOException {
        check(offset, src.remaining(), false);
        child.write(offset, src, fua);
    }

    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        check(offset, length, false);
        child.writeZeroes(offset, length, mayUnmap);
    }

    public void discard(long offset, long length) throws IOException {
        child.discard(offset, length);
    }

    public void flush() throws IOException {
        child.flush();
    }

    public long length() throws IOException {
        return child.length();
    }

    public Extent status(long offset, long length) throws IOException {
        return child.status(offset, length);
    }

    public Capabilities capabilities() {
        return child.capabilities();
    }

    public void close() {
    }

    public String filename() {
        return child.driver().filename();
    }

    public List<BlockChild> children() {
        return List.of(new BlockChild("image", child));
    }
}
