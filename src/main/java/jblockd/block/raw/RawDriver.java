package jblockd.block.raw;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.util.List;
import java.util.Optional;
import java.util.OptionalLong;

import jblockd.block.Access;
import jblockd.block.BlockChild;
import jblockd.block.BlockDriver;
import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.Capabilities;
import jblockd.block.DriverRegistry;
import jblockd.block.Errno;
import jblockd.block.Extent;
import jblockd.block.ImageCreator;
import jblockd.block.IoError;
import jblockd.block.OpenContext;

/**
 * The {@code raw} format driver (QEMU's block/raw-format.c): guest offset {@code x} is byte
 * {@code offset + x} of the {@code file} child, optionally limited to a {@code size} window.
 * Everything passes through, allocation status included. Not growable: the window (or the
 * child's length minus the offset) is the virtual size, and {@link BlockNode} refuses requests
 * past it. Thread-safe (holds no mutable state).
 */
public final class RawDriver implements BlockDriver {
    private static final long SECTOR = 512;

    private final BlockNode file;
    private final long offset;
    /** The window size, or -1: the child's length minus {@link #offset}, re-read each time. */
    private final long size;

    private RawDriver(BlockNode file, long offset, long size) {
        this.file = file;
        this.offset = offset;
        this.size = size;
    }

    public static void register(DriverRegistry r) {
        r.<BlockdevOptions.Raw>register("raw", RawDriver::open);
        r.registerFormat("raw", RawDriver::create, null);
    }

    public static RawDriver open(BlockdevOptions.Raw o, OpenContext ctx) throws IOException {
        if (o.file() == null) {
            throw new IoError(Errno.EINVAL, "Parameter 'file' is missing");
        }
        long off = o.offset() == null ? 0 : o.offset();
        if (off < 0) {
            throw new IoError(Errno.EINVAL, "Parameter 'offset' expects a non-negative value");
        }
        if (o.size() != null && o.size() < 0) {
            throw new IoError(Errno.EINVAL, "Parameter 'size' expects a non-negative value");
        }
        BlockNode file = ctx.child(o.file(), "file", o.common().readOnly());
        if (file == null) {
            throw new IoError(Errno.EINVAL, "Parameter 'file' is missing");
        }
        if (!o.common().readOnly() && file.readOnly()) {
            throw new IoError(Errno.EPERM, "Block node is read-only");
        }
        // raw-format.c raw_apply_options(): the same checks, the same words.
        long real = file.length();
        if (off > real) {
            throw new IoError(Errno.EINVAL, "Offset (" + off + ") cannot be greater than size of the "
                    + "containing file (" + real + ")");
        }
        if (o.size() != null && real - off < o.size()) {
            throw new IoError(Errno.EINVAL, "The sum of offset (" + off + ") and size (" + o.size()
                    + ") has to be smaller or equal to the  actual size of the containing file ("
                    + real + ")");
        }
        if (o.size() != null && o.size() % SECTOR != 0) {
            throw new IoError(Errno.EINVAL, "Specified size is not multiple of " + SECTOR);
        }
        return new RawDriver(file, off, o.size() == null ? -1 : o.size());
    }

    /**
     * qemu-img create -f raw: a sparse file of the size, nothing written (ftruncate through
     * RandomAccessFile.setLength), so the new image is all hole.
     */
    static void create(ImageCreator.Options o) throws IOException {
        if (o.size() < 0) {
            throw new IoError(Errno.EINVAL, "Image size must be a non-negative value");
        }
        if (o.backingFile() != null) {
            throw new IoError(Errno.EINVAL, "Backing file not supported for file format 'raw'");
        }
        try (RandomAccessFile f = new RandomAccessFile(o.path().toFile(), "rw")) {
            f.setLength(0);
            f.setLength(o.size());
        } catch (java.io.FileNotFoundException e) {
            throw new IoError(Errno.ENOENT, "Could not create '" + o.path() + "': " + e.getMessage(), e);
        } catch (IOException e) {
            throw IoError.wrap(e);
        }
    }

    @Override
    public String driverName() {
        return "raw";
    }

    @Override
    public void read(long pos, ByteBuffer dst) throws IOException {
        file.read(offset + pos, dst);
    }

    @Override
    public void write(long pos, ByteBuffer src, boolean fua) throws IOException {
        file.write(offset + pos, src, fua);
    }

    @Override
    public void writeZeroes(long pos, long length, boolean mayUnmap) throws IOException {
        file.writeZeroes(offset + pos, length, mayUnmap);
    }

    @Override
    public void discard(long pos, long length) throws IOException {
        file.discard(offset + pos, length);
    }

    @Override
    public void flush() throws IOException {
        file.flush();
    }

    @Override
    public void startWriteback() throws IOException {
        file.startWriteback();
    }

    /** raw-format.c raw_co_truncate(): the child grows or shrinks with the node, past the offset. */
    @Override
    public void truncate(long newSize) throws IOException {
        if (size >= 0) {
            throw new IoError(Errno.ENOTSUP, "Cannot resize fixed-size raw disks");
        }
        if (Long.MAX_VALUE - newSize < offset) {
            throw new IoError(Errno.EINVAL, "Disk size too large for the chosen offset");
        }
        file.truncate(offset + newSize);
    }

    @Override
    public long length() throws IOException {
        return size >= 0 ? size : Math.max(0, file.length() - offset);
    }

    @Override
    public Extent status(long pos, long length) throws IOException {
        Extent e = file.status(offset + pos, length);
        return new Extent(pos, Math.min(length, e.length()), e.allocation());
    }

    @Override
    public Capabilities capabilities() {
        Capabilities c = file.capabilities();
        return new Capabilities(file.readOnly(), c.canDiscard(), c.canWriteZeroes(), c.canFua(),
                c.requestAlignment(), false);
    }

    @Override
    public void close() {
        // nothing of our own; the graph closes the file child
    }

    @Override
    public String filename() {
        return file.driver().filename();
    }

    @Override
    public List<BlockChild> children() {
        return List.of(new BlockChild("file", file));
    }

    /**
     * raw_child_perm(): the whole file is a filtered child; a window of it ({@code offset},
     * {@code size}) is a data child whose size nobody else may change.
     */
    @Override
    public Access childAccess(BlockChild child, boolean writable, Access parentUse) {
        if (offset == 0 && size < 0) {
            return Access.passthrough(parentUse);
        }
        return Access.forStorage(parentUse, false, writable);
    }

    /** QEMU sums a format's data children: the file's allocation. */
    @Override
    public OptionalLong allocatedFileSize() throws IOException {
        return file.driver().allocatedFileSize();
    }

    /** raw-format.c raw_get_info() asks the file child. */
    @Override
    public Optional<Boolean> dirtyFlag() {
        return file.driver().dirtyFlag();
    }

    /** The byte offset of the window in the file child. */
    public long offset() {
        return offset;
    }
}
