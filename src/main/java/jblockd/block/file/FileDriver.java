package jblockd.block.file;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.EnumSet;
import java.util.Set;

import jblockd.block.Allocation;
import jblockd.block.BlockDriver;
import jblockd.block.BlockdevOptions;
import jblockd.block.Capabilities;
import jblockd.block.DriverRegistry;
import jblockd.block.Errno;
import jblockd.block.Extent;
import jblockd.block.IoError;

/**
 * The {@code file} protocol driver: positional I/O on a host file.
 * (Skeleton version: plain FileChannel I/O; no O_DIRECT, no SEEK_DATA, no fallocate yet.)
 */
public final class FileDriver implements BlockDriver {
    private final Path path;
    private final FileChannel channel;
    private final boolean readOnly;

    private FileDriver(Path path, FileChannel channel, boolean readOnly) {
        this.path = path;
        this.channel = channel;
        this.readOnly = readOnly;
    }

    public static void register(DriverRegistry r) {
        r.<BlockdevOptions.File>register("file", (o, ctx) -> open(Path.of(o.filename()), o.common().readOnly()));
        r.registerFormat("raw", o -> {
            try (FileChannel ch = FileChannel.open(o.path(), StandardOpenOption.CREATE,
                    StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING)) {
                ch.truncate(0);
                if (o.size() > 0) {
                    ch.write(ByteBuffer.allocate(1), o.size() - 1);
                    ch.truncate(o.size());
                }
            }
        }, null);
    }

    public static FileDriver open(Path path, boolean readOnly) throws IOException {
        Set<StandardOpenOption> opts = readOnly ? EnumSet.of(StandardOpenOption.READ)
                : EnumSet.of(StandardOpenOption.READ, StandardOpenOption.WRITE);
        try {
            return new FileDriver(path, FileChannel.open(path, opts), readOnly);
        } catch (IOException e) {
            throw IoError.wrap(e);
        }
    }

    @Override
    public String driverName() {
        return "file";
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        try {
            long pos = offset;
            while (dst.hasRemaining()) {
                int n = channel.read(dst, pos);
                if (n < 0) {
                    // Past the end of a file that shrank under us: reads as zeroes, like pread
                    // of a hole (QEMU's raw-posix pads short reads with zeroes too).
                    while (dst.hasRemaining()) {
                        dst.put((byte) 0);
                    }
                    return;
                }
                pos += n;
            }
        } catch (IOException e) {
            throw IoError.wrap(e);
        }
    }

    @Override
    public void write(long offset, ByteBuffer src, boolean fua) throws IOException {
        try {
            long pos = offset;
            while (src.hasRemaining()) {
                pos += channel.write(src, pos);
            }
            if (fua) {
                channel.force(false);
            }
        } catch (IOException e) {
            throw IoError.wrap(e);
        }
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        ByteBuffer zeroes = ByteBuffer.allocateDirect((int) Math.min(length, 1 << 20));
        long pos = offset;
        long end = offset + length;
        while (pos < end) {
            zeroes.clear().limit((int) Math.min(zeroes.capacity(), end - pos));
            write(pos, zeroes, false);
            pos += zeroes.limit();
        }
    }

    @Override
    public void discard(long offset, long length) {
        // A discard is a hint; the skeleton keeps the data.
    }

    @Override
    public void flush() throws IOException {
        try {
            channel.force(false);
        } catch (IOException e) {
            throw IoError.wrap(e);
        }
    }

    @Override
    public long length() throws IOException {
        return channel.size();
    }

    @Override
    public Extent status(long offset, long length) {
        return new Extent(offset, length, Allocation.DATA);
    }

    @Override
    public Capabilities capabilities() {
        return new Capabilities(readOnly, false, true, true, 1, true);
    }

    @Override
    public void close() throws IOException {
        channel.close();
    }

    @Override
    public String filename() {
        return path.toString();
    }

    /** Grows or shrinks the file (qcow2 allocation and image creation use this). */
    public void truncate(long size) throws IOException {
        if (readOnly) {
            throw IoError.of(Errno.EROFS);
        }
        if (size < channel.size()) {
            channel.truncate(size);
        } else if (size > channel.size()) {
            channel.write(ByteBuffer.allocate(1), size - 1);
        }
    }
}
