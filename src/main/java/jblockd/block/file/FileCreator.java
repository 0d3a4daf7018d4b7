package jblockd.block.file;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileSystemException;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

import jblockd.block.Errno;
import jblockd.block.IoError;

/**
 * blockdev-create for the {@code file} driver (QEMU 7.2 block/file-posix.c raw_co_create): the
 * file is created if missing, cleared by truncating it to 0, marked no-copy-on-write when asked,
 * then grown to its size with the preallocation asked for.
 */
public final class FileCreator {

    /** PreallocMode of the file driver (metadata is refused as QEMU refuses it). */
    public enum Prealloc { OFF, FALLOC, FULL }

    private FileCreator() {
    }

    /**
     * @param nocow set FS_NOCOW_FL before any data is written (btrfs); like QEMU, a file
     *              system without the flag is not an error (the flag is an optimisation)
     */
    public static void create(Path path, long size, Prealloc prealloc, boolean nocow) throws IOException {
        if (size < 0) {
            throw new IoError(Errno.EINVAL, "Image size must be a non-negative value");
        }
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.CREATE, StandardOpenOption.WRITE)) {
            ch.truncate(0);
        } catch (NoSuchFileException e) {
            throw new IoError(Errno.ENOENT, "Could not create '" + path + "': No such file or directory", e);
        } catch (AccessDeniedException e) {
            throw new IoError(Errno.EACCES, "Could not create '" + path + "': Permission denied", e);
        } catch (FileSystemException e) {
            IoError w = IoError.wrap(e);
            throw new IoError(w.errno(), "Could not create '" + path + "': " + w.errno().strerror(), e);
        }
        LibC.Result open = LibC.open(path.toString(), LibC.O_RDWR | LibC.O_CLOEXEC);
        if (open.value() < 0) {
            throw new IoError(Errno.EIO, "Could not create '" + path + "': errno " + open.errno());
        }
        int fd = (int) open.value();
        try {
            if (nocow) {
                // QEMU ignores the ioctl's result: not every file system has the flag
                LibC.addInodeFlags(fd, LibC.FS_NOCOW_FL);
            }
            grow(fd, path, size, prealloc);
        } finally {
            LibC.close(fd);
        }
    }

    /** raw_regular_truncate() from 0 to {@code size}, texts as QEMU's. */
    private static void grow(int fd, Path path, long size, Prealloc prealloc) throws IOException {
        switch (prealloc) {
            case OFF -> check(LibC.ftruncate(fd, size), "Could not resize file");
            case FALLOC -> {
                LibC.Result r = LibC.fallocate(fd, 0, 0, size);
                if (r.value() < 0) {
                    throw new IoError(Errno.fromCode(r.errno()), "Could not preallocate new data: "
                            + Errno.fromCode(r.errno()).strerror());
                }
            }
            case FULL -> {
                check(LibC.ftruncate(fd, size), "Could not resize file");
                // QEMU writes zeroes over the whole new range (handle_aiocb_truncate, full)
                try (FileChannel ch = FileChannel.open(path, StandardOpenOption.WRITE)) {
                    ByteBuffer zero = ByteBuffer.allocate(1 << 20);
                    for (long off = 0; off < size; ) {
                        zero.clear().limit((int) Math.min(zero.capacity(), size - off));
                        off += ch.write(zero, off);
                    }
                    ch.force(false);
                }
            }
        }
    }

    private static void check(LibC.Result r, String what) throws IoError {
        if (r.value() < 0) {
            Errno e = Errno.fromCode(r.errno());
            throw new IoError(e, what + ": " + e.strerror());
        }
    }
}
