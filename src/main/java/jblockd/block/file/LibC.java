package jblockd.block.file;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.StructLayout;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.VarHandle;

/**
 * The few Linux libc calls the JDK has no API for: {@code lseek(SEEK_DATA/SEEK_HOLE)},
 * {@code fallocate} and {@code ftruncate} on an fd of our own. Every call captures {@code errno}
 * (Linker.Option.captureCallState) so a failure is reported with its real code, never guessed.
 * Stateless: the method handles are constants; the captured state lives in a per-call arena.
 */
@SuppressWarnings("restricted") // jblockd runs with --enable-native-access=ALL-UNNAMED (pom, manifest)
final class LibC {
    static final int O_RDONLY = 0;
    static final int O_RDWR = 2;
    static final int O_CLOEXEC = 0x80000;

    static final int SEEK_DATA = 3;
    static final int SEEK_HOLE = 4;

    /** linux/falloc.h */
    static final int FALLOC_FL_KEEP_SIZE = 0x01;
    static final int FALLOC_FL_PUNCH_HOLE = 0x02;
    static final int FALLOC_FL_ZERO_RANGE = 0x10;

    static final int ENOENT = 2;
    static final int ENXIO = 6;
    static final int EINVAL = 22;
    static final int ENOSYS = 38;
    static final int EOPNOTSUPP = 95;

    private static final Linker LINKER = Linker.nativeLinker();
    private static final StructLayout CAPTURE = Linker.Option.captureStateLayout();
    private static final VarHandle ERRNO = CAPTURE.varHandle(
            java.lang.foreign.MemoryLayout.PathElement.groupElement("errno"));
    private static final Linker.Option CCS = Linker.Option.captureCallState("errno");

    private static final MethodHandle OPEN = LINKER.downcallHandle(
            LINKER.defaultLookup().find("open").orElseThrow(),
            FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_INT,
                    ValueLayout.JAVA_INT),
            CCS, Linker.Option.firstVariadicArg(2));
    private static final MethodHandle CLOSE = LINKER.downcallHandle(
            LINKER.defaultLookup().find("close").orElseThrow(),
            FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT), CCS);
    private static final MethodHandle LSEEK = LINKER.downcallHandle(
            LINKER.defaultLookup().find("lseek").orElseThrow(),
            FunctionDescriptor.of(ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT, ValueLayout.JAVA_LONG,
                    ValueLayout.JAVA_INT), CCS);
    private static final MethodHandle FALLOCATE = LINKER.downcallHandle(
            LINKER.defaultLookup().find("fallocate").orElseThrow(),
            FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT,
                    ValueLayout.JAVA_LONG, ValueLayout.JAVA_LONG), CCS);
    private static final MethodHandle SYNC_FILE_RANGE = LINKER.downcallHandle(
            LINKER.defaultLookup().find("sync_file_range").orElseThrow(),
            FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_LONG,
                    ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT), CCS);
    /** linux/fs.h: start writeback of the range's dirty pages, do not wait for it. */
    static final int SYNC_FILE_RANGE_WRITE = 2;
    private static final MethodHandle FTRUNCATE = LINKER.downcallHandle(
            LINKER.defaultLookup().find("ftruncate").orElseThrow(),
            FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_LONG), CCS);

    /** ioctl(fd, request, int *): FS_IOC_GETFLAGS / FS_IOC_SETFLAGS (blockdev-create's nocow). */
    private static final MethodHandle IOCTL = LINKER.downcallHandle(
            LINKER.defaultLookup().find("ioctl").orElseThrow(),
            FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_LONG,
                    ValueLayout.ADDRESS), CCS, Linker.Option.firstVariadicArg(2));
    static final long FS_IOC_GETFLAGS = 0x80086601L;
    static final long FS_IOC_SETFLAGS = 0x40086602L;
    static final int FS_NOCOW_FL = 0x00800000;

    /** glibc >= 2.33 exports fstat(); older ones only __fxstat, then allocation is unknown. */
    private static final MethodHandle FSTAT = LINKER.defaultLookup().find("fstat")
            .map(f -> LINKER.downcallHandle(f,
                    FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.ADDRESS), CCS))
            .orElse(null);
    /**
     * Offset of st_blocks in struct stat: 64 on both x86_64 (asm/stat.h) and the generic layout
     * aarch64 uses; other architectures are not known here.
     */
    private static final long ST_BLOCKS_OFFSET = switch (System.getProperty("os.arch")) {
        case "amd64", "x86_64", "aarch64" -> 64;
        default -> -1;
    };
    private static final long STAT_BYTES = 256; // larger than struct stat on every Linux ABI

    /** fcntl.h: open file description locks (Linux 3.15+) and struct flock's l_type. */
    static final int F_OFD_GETLK = 36;
    static final int F_OFD_SETLK = 37;
    static final short F_RDLCK = 0;
    static final short F_WRLCK = 1;
    static final short F_UNLCK = 2;
    private static final short SEEK_SET = 0;
    /** struct flock on 64-bit Linux: l_type, l_whence (short), l_start, l_len (off_t), l_pid. */
    private static final long FLOCK_BYTES = 32;

    private static final MethodHandle FCNTL_LOCK = LINKER.downcallHandle(
            LINKER.defaultLookup().find("fcntl").orElseThrow(),
            FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT,
                    ValueLayout.ADDRESS), CCS, Linker.Option.firstVariadicArg(2));

    private LibC() {
    }

    /**
     * fcntl(fd, F_OFD_SETLK / F_OFD_GETLK, {type, SEEK_SET, start, len}); for GETLK the
     * result's value is the l_type found (F_UNLCK: nobody else holds a conflicting lock).
     */
    static Result ofdLock(int fd, int cmd, short type, long start, long len) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(CAPTURE);
            MemorySegment fl = arena.allocate(FLOCK_BYTES, 8);
            fl.set(ValueLayout.JAVA_SHORT, 0, type);
            fl.set(ValueLayout.JAVA_SHORT, 2, SEEK_SET);
            fl.set(ValueLayout.JAVA_LONG, 8, start);
            fl.set(ValueLayout.JAVA_LONG, 16, len);
            int r = (int) FCNTL_LOCK.invokeExact(state, fd, cmd, fl);
            if (r < 0 || cmd != F_OFD_GETLK) {
                return result(r, state);
            }
            return new Result(fl.get(ValueLayout.JAVA_SHORT, 0), 0);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** A call's result: {@code value} as the function returned it, {@code errno} when it failed. */
    record Result(long value, int errno) {
        boolean failed() {
            return value < 0;
        }
    }

    static Result open(String path, int flags) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(CAPTURE);
            MemorySegment cpath = arena.allocateFrom(path);
            int fd = (int) OPEN.invokeExact(state, cpath, flags, 0);
            return result(fd, state);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    static Result close(int fd) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(CAPTURE);
            int r = (int) CLOSE.invokeExact(state, fd);
            return result(r, state);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    static Result lseek(int fd, long offset, int whence) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(CAPTURE);
            long r = (long) LSEEK.invokeExact(state, fd, offset, whence);
            return result(r, state);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    static Result fallocate(int fd, int mode, long offset, long length) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(CAPTURE);
            int r = (int) FALLOCATE.invokeExact(state, fd, mode, offset, length);
            return result(r, state);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * Sets the file attribute flags {@code add} (FS_IOC_GETFLAGS, then FS_IOC_SETFLAGS with them
     * or-ed in). Result value -1 with errno when the file system has no such flags.
     */
    static Result addInodeFlags(int fd, int add) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(CAPTURE);
            MemorySegment flags = arena.allocate(ValueLayout.JAVA_INT);
            int r = (int) IOCTL.invokeExact(state, fd, FS_IOC_GETFLAGS, flags);
            if (r < 0) {
                return result(r, state);
            }
            flags.set(ValueLayout.JAVA_INT, 0, flags.get(ValueLayout.JAVA_INT, 0) | add);
            r = (int) IOCTL.invokeExact(state, fd, FS_IOC_SETFLAGS, flags);
            return result(r, state);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** sync_file_range(2): {@code length} 0 means up to the end of the file. */
    static Result syncFileRange(int fd, long offset, long length, int flags) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(CAPTURE);
            int r = (int) SYNC_FILE_RANGE.invokeExact(state, fd, offset, length, flags);
            return result(r, state);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    static Result ftruncate(int fd, long length) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(CAPTURE);
            int r = (int) FTRUNCATE.invokeExact(state, fd, length);
            return result(r, state);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * The bytes allocated to the open file ({@code st_blocks * 512}, what QEMU's file-posix
     * raw_get_allocated_file_size() reports), or -1 when this platform cannot tell.
     */
    static long allocatedBytes(int fd) {
        if (FSTAT == null || ST_BLOCKS_OFFSET < 0) {
            return -1;
        }
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(CAPTURE);
            MemorySegment st = arena.allocate(STAT_BYTES, 8);
            int r = (int) FSTAT.invokeExact(state, fd, st);
            if (r < 0) {
                return -1;
            }
            return st.get(ValueLayout.JAVA_LONG, ST_BLOCKS_OFFSET) * 512;
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static Result result(long value, MemorySegment state) {
        return new Result(value, value < 0 ? (int) ERRNO.get(state, 0L) : 0);
    }

    private static RuntimeException rethrow(Throwable t) {
        if (t instanceof RuntimeException re) {
            throw re;
        }
        if (t instanceof Error e) {
            throw e;
        }
        throw new IllegalStateException("native call failed", t);
    }
}
