package jblockd.block.file;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.ClosedByInterruptException;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.FileChannel;
import java.nio.file.AccessDeniedException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.OpenOption;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.HashSet;
import java.util.Optional;
import java.util.OptionalLong;
import java.util.Set;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.ReentrantLock;

import com.sun.nio.file.ExtendedOpenOption;

import jblockd.block.Allocation;
import jblockd.block.BlockDriver;
import jblockd.block.Access;
import jblockd.block.BlockdevOptions;
import jblockd.block.Capabilities;
import jblockd.block.DriverRegistry;
import jblockd.block.Errno;
import jblockd.block.Extent;
import jblockd.block.FileType;
import jblockd.block.IoError;

/**
 * The {@code file} protocol driver (QEMU's block/file-posix.c): positional I/O on a host file.
 * <ul>
 *   <li>Data goes through a {@link FileChannel}; with {@code cache.direct=on} the channel is
 *       opened O_DIRECT and unaligned requests go through aligned bounce buffers, partial
 *       blocks by read-modify-write under a {@link RangeLock} on the affected aligned blocks.</li>
 *   <li>A second, native fd serves what the JDK cannot do: allocation status through
 *       lseek(SEEK_DATA/SEEK_HOLE), discard and write-zeroes through fallocate, ftruncate.</li>
 *   <li>Growable: writes past the end extend the file, reads past it return zeroes (qcow2
 *       allocates clusters at the end of its file that way).</li>
 * </ul>
 * Thread-safe. A thread interrupted during I/O makes the JDK close the shared channel
 * (InterruptibleChannel); the driver then reopens it, fails only the interrupted request
 * (ECANCELED, interrupt flag kept) and retries the others' requests on the new channel.
 */
public final class FileDriver implements BlockDriver, AutoCloseable {
    private static final int MAX_REOPEN_RETRIES = 8;

    private final Path path;
    private final boolean readOnly;
    private final boolean direct;
    private final boolean noFlush;
    /** 1 when buffered; the O_DIRECT block size otherwise. */
    private final int alignment;
    /** A block or character device ({@code host_device}): fixed size, not growable. */
    private boolean hostDevice;
    /** Our own fd for lseek/fallocate/ftruncate (the JDK does not expose a FileChannel's fd). */
    private final int fd;
    private final RangeLock ranges = new RangeLock();
    /** Held by O_DIRECT writes whose aligned range crosses the end of the file. */
    private final ReentrantLock extendLock = new ReentrantLock();
    private final ReentrantLock reopenLock = new ReentrantLock();
    private final BouncePool bounce;

    /**
     * The file's length as this driver made it: read once at open, raised by writes past the
     * end, set by truncate. QEMU caches it the same way (bs->total_sectors, raised in
     * bdrv_co_write_req_finish), which spares an fstat per request; a file grown behind our
     * back by another process is not seen, as in QEMU.
     */
    private final AtomicLong size;
    private volatile FileChannel channel;
    private volatile boolean closed;
    /** Remembered after the first EOPNOTSUPP, like file-posix.c's has_discard/has_write_zeroes. */
    private volatile boolean punchUnsupported;
    private volatile boolean zeroRangeUnsupported;
    private volatile boolean seekUnsupported;
    /** Set once at open by the auto-read-only fallback; see {@link #writeUnavailable()}. */
    private IoError writeUnavailable;
    /** QEMU's image locks on {@link #fd}; null with locking=off (or auto where OFD locks fail). */
    private ImageLocks locks;
    /** The file's identity (device, inode) while locking: nodes of one image lock together. */
    private Object lockKey;

    private FileDriver(Path path, boolean readOnly, boolean direct, boolean noFlush, int alignment,
                       FileChannel channel, int fd) {
        this.path = path;
        this.readOnly = readOnly;
        this.direct = direct;
        this.noFlush = noFlush;
        this.alignment = alignment;
        this.channel = channel;
        this.fd = fd;
        this.bounce = direct ? new BouncePool(alignment) : null;
        this.size = new AtomicLong();
    }

    public static void register(DriverRegistry r) {
        r.<BlockdevOptions.File>register("file", (o, ctx) -> open(o));
        r.<BlockdevOptions.File>register("host_device", (o, ctx) -> open(o));
        // file-posix.c raw_parse_filename(): "file:" is stripped, the rest is the path (colons and all)
        r.registerProtocol("file", (filename, common, filenames) ->
                new BlockdevOptions.File(common, filename.substring("file:".length())));
    }

    public static FileDriver open(BlockdevOptions.File o) throws IOException {
        if (o.filename() == null || o.filename().isEmpty()) {
            throw new IoError(Errno.EINVAL, "Parameter 'filename' is missing");
        }
        Path path = Path.of(o.filename());
        FileDriver d = openUnlocked(o, path);
        d.hostDevice = o.hostDevice();
        try {
            checkFileType(path, o.hostDevice());
        } catch (IoError e) {
            d.close();
            throw e;
        }
        if (o.locking() != BlockdevOptions.Locking.OFF) {
            if (ImageLocks.supported(d.fd)) {
                d.locks = new ImageLocks(d.fd, path.toString());
                d.lockKey = Files.readAttributes(path, java.nio.file.attribute.BasicFileAttributes.class).fileKey();
            } else if (o.locking() == BlockdevOptions.Locking.ON) {
                // QEMU falls back to process-wide POSIX locks here; jblockd has only OFD locks
                d.close();
                throw new IoError(Errno.ENOTSUP, "Could not open '" + path
                        + "': OFD locks are not supported on this file (use locking=off or auto)");
            }
        }
        return d;
    }

    /**
     * file-posix.c raw_open_common(), after the open: {@code file} takes regular files only,
     * {@code host_device} block and character devices only (QEMU's texts).
     */
    private static void checkFileType(Path path, boolean hostDevice) throws IoError {
        FileType type = FileType.of(path);
        if (type == FileType.UNKNOWN) {
            return; // no way to tell: the open itself succeeded
        }
        if (!hostDevice && type != FileType.REGULAR) {
            throw new IoError(Errno.EINVAL, "'file' driver requires '" + path + "' to be a regular file");
        }
        if (hostDevice && type != FileType.DEVICE) {
            throw new IoError(Errno.EINVAL, "'host_device' driver requires '" + path
                    + "' to be either a character or block device");
        }
    }

    private static FileDriver openUnlocked(BlockdevOptions.File o, Path path) throws IOException {
        if (!o.autoReadOnly() || o.common().readOnly()) {
            return open(path, o.common().readOnly(), o.common().cacheDirect(), o.common().cacheNoFlush());
        }
        try {
            return open(path, false, o.common().cacheDirect(), o.common().cacheNoFlush());
        } catch (IoError e) {
            if (e.errno() != Errno.EACCES && e.errno() != Errno.EROFS && e.errno() != Errno.EPERM) {
                throw e;
            }
            // auto-read-only: the node stays read-write in name (QEMU 7.2's file-posix opens
            // such a file read-only until a writer comes, then reopens it read-write and
            // fails that writer); we open it read-only and remember why writing cannot work,
            // and the graph refuses a writer with that reason (BlockDriver.writeUnavailable).
            FileDriver d = open(path, true, o.common().cacheDirect(), o.common().cacheNoFlush());
            d.writeUnavailable = e;
            return d;
        }
    }

    /**
     * Why this file cannot be written although its node is read-write (auto-read-only fell
     * back to a read-only open), as QEMU says it when a writer arrives: "Could not open 'P':
     * Read-only file system" (EROFS and EACCES both happen).
     */
    /** The node's permissions as lock bytes on the image, so other processes see them. */
    @Override
    public void applyPermissions(Access use) throws IoError {
        if (locks != null && !closed) {
            locks.apply(use.needs(), use.shares());
        }
    }

    @Override
    public Object storageKey() {
        return lockKey;
    }

    @Override
    public Optional<IoError> writeUnavailable() {
        return Optional.ofNullable(writeUnavailable);
    }

    public static FileDriver open(Path path, boolean readOnly) throws IOException {
        return open(path, readOnly, false, false);
    }

    public static FileDriver open(Path path, boolean readOnly, boolean direct, boolean noFlush)
            throws IOException {
        int alignment = direct ? directAlignment(path) : 1;
        FileChannel ch = openChannel(path, readOnly, direct);
        LibC.Result r = LibC.open(path.toAbsolutePath().toString(),
                (readOnly ? LibC.O_RDONLY : LibC.O_RDWR) | LibC.O_CLOEXEC);
        if (r.failed()) {
            ch.close();
            throw new IoError(Errno.fromCode(r.errno()), "Could not open '" + path + "': "
                    + Errno.fromCode(r.errno()).strerror());
        }
        FileDriver d = new FileDriver(path, readOnly, direct, noFlush, alignment, ch, (int) r.value());
        try {
            d.size.set(d.realSize());
        } catch (IOException e) {
            d.close();
            throw e;
        }
        return d;
    }

    private static int directAlignment(Path path) throws IoError {
        try {
            long bs = Files.getFileStore(path).getBlockSize();
            // O_DIRECT needs the logical block size (512 or 4096); the file store's block size
            // is what the JDK's DIRECT channel checks against, and it is a multiple of it.
            return bs >= 512 && bs <= (1 << 16) && Long.bitCount(bs) == 1 ? (int) bs : 4096;
        } catch (IOException | UnsupportedOperationException e) {
            return 4096;
        }
    }

    private static FileChannel openChannel(Path path, boolean readOnly, boolean direct) throws IoError {
        Set<OpenOption> opts = new HashSet<>();
        opts.add(StandardOpenOption.READ);
        if (!readOnly) {
            opts.add(StandardOpenOption.WRITE);
        }
        if (direct) {
            opts.add(ExtendedOpenOption.DIRECT);
        }
        try {
            return FileChannel.open(path, opts);
        } catch (NoSuchFileException e) {
            throw new IoError(Errno.ENOENT, "Could not open '" + path + "': No such file or directory", e);
        } catch (AccessDeniedException e) {
            throw new IoError(Errno.EACCES, "Could not open '" + path + "': Permission denied", e);
        } catch (IOException e) {
            IoError io = mapIo(e);
            throw new IoError(io.errno(), "Could not open '" + path + "': " + io.errno().strerror(), e);
        } catch (UnsupportedOperationException e) {
            throw new IoError(Errno.EINVAL, "Could not open '" + path + "': O_DIRECT not supported", e);
        }
    }

    @Override
    public String driverName() {
        return hostDevice ? "host_device" : "file";
    }

    // ---- read ---------------------------------------------------------------------------

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        if (direct && !isAligned(offset, dst)) {
            readBounced(offset, dst);
            return;
        }
        long pos = offset;
        while (dst.hasRemaining()) {
            long at = pos;
            int n = readAt(dst, at);
            if (n < 0 || (direct && n % alignment != 0)) {
                // EOF (an O_DIRECT short read only happens there): the rest reads as zeroes,
                // as file-posix.c pads short reads of a growable file.
                zeroFill(dst);
                return;
            }
            pos += n;
        }
    }

    private void readBounced(long offset, ByteBuffer dst) throws IOException {
        ByteBuffer b = bounce.take();
        try {
            long pos = offset;
            while (dst.hasRemaining()) {
                long a0 = alignDown(pos);
                int skip = (int) (pos - a0);
                int chunk = (int) Math.min(BouncePool.BUFFER_SIZE, alignUp(pos + dst.remaining()) - a0);
                int got = readAligned(b, a0, chunk);
                int want = Math.min(dst.remaining(), chunk - skip);
                int have = Math.max(0, Math.min(want, got - skip));
                if (have > 0) {
                    dst.put(dst.position(), b, skip, have);
                    dst.position(dst.position() + have);
                }
                for (int i = have; i < want; i++) {
                    dst.put((byte) 0);
                }
                pos += want;
            }
        } finally {
            bounce.give(b);
        }
    }

    /** Reads {@code len} aligned bytes at aligned {@code pos} into {@code b}; returns bytes before EOF. */
    private int readAligned(ByteBuffer b, long pos, int len) throws IOException {
        b.clear().limit(len);
        while (b.hasRemaining()) {
            long at = pos + b.position();
            int n = io(ch -> ch.read(b, at));
            if (n <= 0 || n % alignment != 0) {
                break;
            }
        }
        return b.position();
    }

    // ---- write --------------------------------------------------------------------------

    @Override
    @SuppressWarnings("try") // the range lock is held for the body; it has no other use
    public void write(long offset, ByteBuffer src, boolean fua) throws IOException {
        int startPos = src.position();
        if (direct) {
            long end = offset + src.remaining();
            try (RangeLock.Held h = ranges.acquire(alignDown(offset), alignUp(end))) {
                writeDirectLocked(offset, src);
            }
        } else {
            long pos = offset;
            while (src.hasRemaining()) {
                long at = pos;
                pos += writeAt(src, at);
            }
        }
        grownTo(offset + (src.position() - startPos));
        if (fua) {
            // QEMU 7.2's file-posix has no native FUA: the block layer emulates it with a flush,
            // which cache.no-flush=on drops like any other
            flush();
        }
    }

    private void grownTo(long end) {
        size.accumulateAndGet(end, Math::max);
    }

    /** O_DIRECT write; the caller holds the range lock of the aligned range. */
    private void writeDirectLocked(long offset, ByteBuffer src) throws IOException {
        long end = offset + src.remaining();
        if (alignUp(end) <= size.get()) {
            // Wholly inside the file (the cached length only lags behind the real one, so this
            // is conservative): the length cannot change, no other writer can cut it.
            writeDirectBlocks(offset, src);
            return;
        }
        // The last aligned block reaches past EOF: O_DIRECT only writes whole blocks, so the file
        // would end block-aligned. Extenders run one at a time (extendLock, also taken by
        // write-zeroes past EOF and truncate) and cut the file back to its exact end; another
        // extender running meanwhile could otherwise lose its data to that cut.
        extendLock.lock();
        try {
            long before = realSize();
            writeDirectBlocks(offset, src);
            long want = Math.max(before, end);
            if (end % alignment != 0 && realSize() > want) {
                ftruncate(want);
            }
            grownTo(end);
        } finally {
            extendLock.unlock();
        }
    }

    private void writeDirectBlocks(long offset, ByteBuffer src) throws IOException {
        if (isAligned(offset, src)) {
            long pos = offset;
            while (src.hasRemaining()) {
                long at = pos;
                pos += writeAt(src, at);
            }
            return;
        }
        ByteBuffer b = bounce.take();
        try {
            long pos = offset;
            long end = offset + src.remaining();
            while (pos < end) {
                long a0 = alignDown(pos);
                int skip = (int) (pos - a0);
                int chunk = (int) Math.min(BouncePool.BUFFER_SIZE, alignUp(end) - a0);
                int n = (int) Math.min(chunk - skip, end - pos);
                // Read-modify-write of the partial head and tail blocks (zeroes past EOF).
                b.clear().limit(chunk);
                zeroFill(b);
                if (skip != 0) {
                    readBlockInto(b, a0, 0);
                }
                if (skip + n < chunk && (skip == 0 || chunk > alignment)) {
                    readBlockInto(b, a0, chunk - alignment);
                }
                b.put(skip, src, src.position(), n);
                src.position(src.position() + n);
                b.clear().limit(chunk);
                long p = a0;
                while (b.hasRemaining()) {
                    long at = p + b.position();
                    io(ch -> ch.write(b, at));
                }
                pos += n;
            }
        } finally {
            bounce.give(b);
        }
    }

    /** Reads the aligned block at {@code base + rel} into {@code b} at index {@code rel}. */
    private void readBlockInto(ByteBuffer b, long base, int rel) throws IOException {
        ByteBuffer block = b.duplicate().clear().position(rel).limit(rel + alignment).slice();
        readAligned(block, base + rel, alignment);
    }

    // ---- zeroes and discard -------------------------------------------------------------

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        long end = offset + length;
        RangeLock.Held h = direct ? ranges.acquire(alignDown(offset), alignUp(end)) : null;
        // With O_DIRECT, growing the file must not overlap an unaligned extender's cut-back.
        boolean extending = direct && alignUp(end) > size.get();
        if (extending) {
            extendLock.lock();
        }
        try {
            long eof = length();
            if (mayUnmap && !punchUnsupported && offset < eof) {
                long inside = Math.min(end, eof) - offset;
                if (fallocate(LibC.FALLOC_FL_PUNCH_HOLE | LibC.FALLOC_FL_KEEP_SIZE, offset, inside)) {
                    if (end > eof) {
                        zeroRange(eof, end - eof);
                    }
                    grownTo(end);
                    return;
                }
                punchUnsupported = true;
            }
            zeroRange(offset, length);
            grownTo(end);
        } finally {
            if (extending) {
                extendLock.unlock();
            }
            if (h != null) {
                h.close();
            }
        }
    }

    /** FALLOC_FL_ZERO_RANGE (extends the file when needed), else plain zero writes. */
    private void zeroRange(long offset, long length) throws IOException {
        if (!zeroRangeUnsupported) {
            if (fallocate(LibC.FALLOC_FL_ZERO_RANGE, offset, length)) {
                return;
            }
            zeroRangeUnsupported = true;
        }
        ByteBuffer zeroes = direct ? bounce.take() : ByteBuffer.allocateDirect((int) Math.min(length, 1 << 20));
        try {
            long pos = offset;
            long end = offset + length;
            while (pos < end) {
                zeroes.clear().limit((int) Math.min(Math.min(zeroes.capacity(), BouncePool.BUFFER_SIZE), end - pos));
                zeroFill(zeroes.duplicate());
                if (direct) {
                    writeDirectLocked(pos, zeroes);
                } else {
                    long p = pos;
                    while (zeroes.hasRemaining()) {
                        long at = p + zeroes.position();
                        io(ch -> ch.write(zeroes, at));
                    }
                }
                pos += zeroes.limit();
            }
        } finally {
            if (direct) {
                bounce.give(zeroes);
            }
        }
    }

    @Override
    public void discard(long offset, long length) throws IOException {
        if (punchUnsupported) {
            return; // a discard is a hint; file-posix.c returns -ENOTSUP and the layer ignores it
        }
        long end = offset + length;
        RangeLock.Held h = direct ? ranges.acquire(alignDown(offset), alignUp(end)) : null;
        try {
            long eof = length();
            if (offset >= eof) {
                return;
            }
            if (!fallocate(LibC.FALLOC_FL_PUNCH_HOLE | LibC.FALLOC_FL_KEEP_SIZE, offset,
                    Math.min(end, eof) - offset)) {
                punchUnsupported = true;
            }
        } finally {
            if (h != null) {
                h.close();
            }
        }
    }

    /** True on success, false when the mode is unsupported; other failures throw. */
    private boolean fallocate(int mode, long offset, long length) throws IoError {
        checkOpen();
        LibC.Result r = LibC.fallocate(fd, mode, offset, length);
        if (!r.failed()) {
            return true;
        }
        if (r.errno() == LibC.EOPNOTSUPP || r.errno() == LibC.ENOSYS) {
            return false;
        }
        throw new IoError(Errno.fromCode(r.errno()), "fallocate on '" + path + "' failed: "
                + Errno.fromCode(r.errno()).strerror());
    }

    // ---- flush, length, status ----------------------------------------------------------

    @Override
    public void flush() throws IOException {
        if (noFlush) {
            return; // cache.no-flush=on: QEMU drops flushes too
        }
        io(ch -> {
            ch.force(false);
            return null;
        });
    }

    /**
     * sync_file_range(SYNC_FILE_RANGE_WRITE) over the whole file: the kernel starts writing the
     * dirty pages now instead of at its own pace (or at the next flush). Nothing to do with
     * cache.direct=on, where nothing waits in the page cache. A failure is not reported: the
     * hint promises nothing, and the next flush meets any real write error.
     */
    @Override
    public void startWriteback() {
        if (!direct && !readOnly) {
            LibC.syncFileRange(fd, 0, 0, LibC.SYNC_FILE_RANGE_WRITE);
        }
    }

    @Override
    public long length() {
        return size.get();
    }

    /** The length the file system reports (fstat). */
    private long realSize() throws IoError {
        return io(FileChannel::size);
    }

    /**
     * Holes are {@link Allocation#ZERO}, everything else {@link Allocation#DATA}
     * (file-posix.c's find_allocation); past the end of the file reads as zeroes.
     */
    @Override
    public Extent status(long offset, long length) throws IOException {
        checkOpen();
        long size = length();
        if (offset >= size) {
            return new Extent(offset, length, Allocation.ZERO);
        }
        if (seekUnsupported) {
            return new Extent(offset, Math.min(length, size - offset), Allocation.DATA);
        }
        LibC.Result data = LibC.lseek(fd, offset, LibC.SEEK_DATA);
        if (data.failed()) {
            if (data.errno() == LibC.ENXIO) {
                // No data from here to EOF (or the file shrank): a hole, then zeroes past EOF.
                return new Extent(offset, length, Allocation.ZERO);
            }
            if (data.errno() == LibC.EINVAL || data.errno() == LibC.EOPNOTSUPP) {
                seekUnsupported = true;
                return new Extent(offset, Math.min(length, size - offset), Allocation.DATA);
            }
            throw new IoError(Errno.fromCode(data.errno()), "SEEK_DATA on '" + path + "' failed");
        }
        if (data.value() > offset) {
            return new Extent(offset, Math.min(length, data.value() - offset), Allocation.ZERO);
        }
        LibC.Result hole = LibC.lseek(fd, offset, LibC.SEEK_HOLE);
        long holeAt;
        if (hole.failed()) {
            if (hole.errno() != LibC.ENXIO) {
                throw new IoError(Errno.fromCode(hole.errno()), "SEEK_HOLE on '" + path + "' failed");
            }
            holeAt = size; // shrank meanwhile: data up to what we saw as the end
        } else {
            holeAt = hole.value();
        }
        if (holeAt <= offset) {
            // The file changed between the two seeks; report what is safe (data).
            holeAt = Math.min(size, offset + length);
        }
        return new Extent(offset, Math.min(length, holeAt - offset), Allocation.DATA);
    }

    @Override
    public Capabilities capabilities() {
        // Any byte range is accepted (O_DIRECT bounces internally); the alignment is advertised
        // so that clients (NBD block size) can avoid read-modify-write, as QEMU does.
        // an auto-read-only fallback stays writable in name: writers are refused by the graph
        return new Capabilities(readOnly && writeUnavailable == null, true, true, true, alignment, !hostDevice);
    }

    @Override
    public void close() throws IOException {
        if (closed) {
            return;
        }
        closed = true;
        try {
            channel.close();
        } finally {
            LibC.close(fd);
        }
    }

    @Override
    public String filename() {
        return path.toString();
    }

    /** st_blocks * 512 of the open file (file-posix.c raw_get_allocated_file_size()). */
    @Override
    public OptionalLong allocatedFileSize() {
        long bytes = LibC.allocatedBytes(fd);
        return bytes < 0 ? OptionalLong.empty() : OptionalLong.of(bytes);
    }

    /** Linux marks the link of an unlinked (or replaced) open file "PATH (deleted)" in /proc/self/fd. */
    @Override
    public boolean unlinked() {
        try {
            return Files.readSymbolicLink(Path.of("/proc/self/fd/" + fd)).toString().endsWith(" (deleted)");
        } catch (IOException | UnsupportedOperationException e) {
            return false; // no /proc: cannot tell
        }
    }

    /** True when opened with cache.direct=on (O_DIRECT). */
    public boolean direct() {
        return direct;
    }

    /** Grows (sparse) or shrinks the file; qcow2, image creation and block_resize use this. */
    @Override
    public void truncate(long size) throws IOException {
        if (readOnly) {
            throw IoError.of(Errno.EROFS);
        }
        if (size < 0) {
            throw new IoError(Errno.EINVAL, "negative size " + size);
        }
        if (hostDevice) {
            // file-posix.c raw_co_truncate(): a device never grows; QEMU 7.2's block_resize
            // (not exact) accepts a smaller size and changes nothing, which jblockd refuses
            // with QEMU's text for an exact resize (README: differences)
            throw size > this.size.get() ? new IoError(Errno.EINVAL, "Cannot grow device files")
                    : new IoError(Errno.ENOTSUP, "Cannot resize device files");
        }
        extendLock.lock();
        try {
            ftruncate(size);
            this.size.set(size);
        } finally {
            extendLock.unlock();
        }
    }

    private void ftruncate(long size) throws IoError {
        checkOpen();
        LibC.Result r = LibC.ftruncate(fd, size);
        if (r.failed()) {
            throw new IoError(Errno.fromCode(r.errno()), "Failed to resize '" + path + "': "
                    + Errno.fromCode(r.errno()).strerror());
        }
    }

    // ---- helpers ------------------------------------------------------------------------

    @FunctionalInterface
    private interface ChannelOp<T> {
        T apply(FileChannel ch) throws IOException;
    }

    /** Runs one channel call, surviving a channel closed by another thread's interrupt. */
    private <T> T io(ChannelOp<T> op) throws IoError {
        for (int attempt = 0; ; attempt++) {
            FileChannel ch = channel;
            try {
                return op.apply(ch);
            } catch (ClosedByInterruptException e) {
                reopen(ch);
                throw new IoError(Errno.ECANCELED, "I/O on '" + path + "' interrupted", e);
            } catch (ClosedChannelException e) { // includes AsynchronousCloseException
                if (closed || attempt >= MAX_REOPEN_RETRIES) {
                    throw new IoError(Errno.EIO, "'" + path + "' is closed", e);
                }
                reopen(ch);
            } catch (IOException e) {
                throw mapIo(e);
            }
        }
    }

    private void reopen(FileChannel broken) throws IoError {
        reopenLock.lock();
        try {
            if (channel == broken && !closed) {
                // Opening is not interruptible; keep the caller's interrupt flag for later.
                boolean interrupted = Thread.interrupted();
                try {
                    channel = openChannel(path, readOnly, direct);
                } finally {
                    if (interrupted) {
                        Thread.currentThread().interrupt();
                    }
                }
            }
        } finally {
            reopenLock.unlock();
        }
    }

    static IoError mapIo(IOException e) {
        if (e instanceof IoError io) {
            return io;
        }
        String msg = String.valueOf(e.getMessage());
        if (msg.contains("File too large")) {
            return new IoError(Errno.EFBIG, msg, e);
        }
        if (msg.contains("Read-only file system")) {
            return new IoError(Errno.EROFS, msg, e);
        }
        if (msg.contains("Invalid argument")) {
            return new IoError(Errno.EINVAL, msg, e);
        }
        return IoError.wrap(e); // ENOSPC from "No space left on device", EIO otherwise
    }

    private void checkOpen() throws IoError {
        if (closed) {
            throw new IoError(Errno.EIO, "'" + path + "' is closed");
        }
    }

    /**
     * The JDK copies a heap buffer through a temporary direct buffer of the same size, cached
     * per carrier thread; at most 1 MiB per call keeps those bounded whatever the request size.
     */
    private static final int HEAP_CHUNK = 1 << 20;

    private int readAt(ByteBuffer dst, long at) throws IoError {
        int limit = dst.limit();
        if (!dst.isDirect() && dst.remaining() > HEAP_CHUNK) {
            dst.limit(dst.position() + HEAP_CHUNK);
        }
        try {
            return io(ch -> ch.read(dst, at));
        } finally {
            dst.limit(limit);
        }
    }

    private int writeAt(ByteBuffer src, long at) throws IoError {
        int limit = src.limit();
        if (!src.isDirect() && src.remaining() > HEAP_CHUNK) {
            src.limit(src.position() + HEAP_CHUNK);
        }
        try {
            return io(ch -> ch.write(src, at));
        } finally {
            src.limit(limit);
        }
    }

    private boolean isAligned(long offset, ByteBuffer buf) {
        return offset % alignment == 0 && buf.remaining() % alignment == 0 && buf.isDirect()
                && buf.alignmentOffset(buf.position(), alignment) == 0;
    }

    private long alignDown(long x) {
        return x - Math.floorMod(x, alignment);
    }

    private long alignUp(long x) {
        long r = Math.floorMod(x, alignment);
        return r == 0 ? x : x + alignment - r;
    }

    private static void zeroFill(ByteBuffer b) {
        while (b.remaining() >= 8) {
            b.putLong(0L);
        }
        while (b.hasRemaining()) {
            b.put((byte) 0);
        }
    }
}
