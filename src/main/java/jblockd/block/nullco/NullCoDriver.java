package jblockd.block.nullco;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.Optional;
import java.util.OptionalLong;

import jblockd.block.Allocation;
import jblockd.block.BlockDriver;
import jblockd.block.BlockdevOptions;
import jblockd.block.Capabilities;
import jblockd.block.DriverRegistry;
import jblockd.block.Errno;
import jblockd.block.Extent;
import jblockd.block.IoError;

/**
 * The {@code null-co} protocol driver (QEMU's block/null.c): a device of {@code size} bytes that
 * stores nothing. Writes, zeroes, discards and flushes succeed and are dropped; reads always
 * return zeroes (QEMU leaves the buffer untouched unless {@code read-zeroes=on}; zeroes are the
 * deterministic choice of the allowed behaviours). Status is ZERO with {@code read-zeroes},
 * DATA otherwise, as null.c's block_status reports. Stateless, so thread-safe.
 */
public final class NullCoDriver implements BlockDriver {
    private final long size;
    private final boolean readZeroes;
    private final boolean readOnly;
    private final String filename;

    public NullCoDriver(long size, boolean readZeroes, boolean readOnly) {
        this(size, readZeroes, readOnly, "null-co://");
    }

    private NullCoDriver(long size, boolean readZeroes, boolean readOnly, String filename) {
        this.size = size;
        this.readZeroes = readZeroes;
        this.readOnly = readOnly;
        this.filename = filename;
    }

    /** block/null.c: a null node without {@code size} is 1 GiB. */
    public static final long DEFAULT_SIZE = 1L << 30;

    public static void register(DriverRegistry r) {
        r.<BlockdevOptions.NullCo>register("null-co", (o, ctx) -> open(o));
        r.registerProtocol("null-co", NullCoDriver::parseFilename);
    }

    /** block/null.c null_file_open(): the one filename the driver takes; 1 GiB, as the default. */
    private static BlockdevOptions parseFilename(String filename, BlockdevOptions.Common common,
                                                 jblockd.block.Filenames filenames) throws IoError {
        if (!filename.equals("null-co://")) {
            throw new IoError(Errno.EINVAL, "The only allowed filename for this driver is 'null-co://'");
        }
        return new BlockdevOptions.NullCo(common, DEFAULT_SIZE, false);
    }

    public static NullCoDriver open(BlockdevOptions.NullCo o) throws IoError {
        if (o.size() < 0) {
            throw new IoError(Errno.EINVAL, "Parameter 'size' expects a non-negative value");
        }
        return new NullCoDriver(o.size(), o.readZeroes(), o.common().readOnly(), filename(o));
    }

    /**
     * QEMU's refreshed name (block.c bdrv_refresh_filename, null.c null_refresh_filename):
     * {@code null-co://} unless a strong option (size, read-zeroes) was given, then a
     * {@code json:} of driver and those options. QEMU prints a QDict in hash-bucket order
     * (qobject/qdict.c tdb_hash(key) % 512): read-zeroes (86), driver (239), size (318).
     */
    static String filename(BlockdevOptions.NullCo o) {
        if (!o.sizeGiven() && !o.readZeroesGiven()) {
            return "null-co://";
        }
        StringBuilder b = new StringBuilder("json:{");
        if (o.readZeroesGiven()) {
            b.append("\"read-zeroes\": ").append(o.readZeroes()).append(", ");
        }
        b.append("\"driver\": \"null-co\"");
        if (o.sizeGiven()) {
            b.append(", \"size\": ").append(o.size());
        }
        return b.append('}').toString();
    }

    @Override
    public String driverName() {
        return "null-co";
    }

    @Override
    public void read(long offset, ByteBuffer dst) {
        while (dst.remaining() >= 8) {
            dst.putLong(0L);
        }
        while (dst.hasRemaining()) {
            dst.put((byte) 0);
        }
    }

    @Override
    public void write(long offset, ByteBuffer src, boolean fua) {
        src.position(src.limit());
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) {
        // dropped
    }

    @Override
    public void discard(long offset, long length) {
        // dropped
    }

    @Override
    public void flush() {
        // nothing is ever dirty
    }

    @Override
    public long length() {
        return size;
    }

    @Override
    public Extent status(long offset, long length) throws IOException {
        return new Extent(offset, length, readZeroes ? Allocation.ZERO : Allocation.DATA);
    }

    /**
     * No discard: QEMU's null-co has no bdrv_co_pdiscard, so block/io.c answers a discard with
     * success before it reaches the driver (and records it in no dirty bitmap); the node does the
     * same on {@code canDiscard} false. {@link #discard} stays a no-op for direct callers.
     */
    @Override
    public Capabilities capabilities() {
        return new Capabilities(readOnly, false, true, true, 1, false);
    }

    @Override
    public void close() {
        // no resources
    }

    /** block/null.c null_allocated_file_size(): nothing on the host. */
    @Override
    public OptionalLong allocatedFileSize() {
        return OptionalLong.of(0);
    }

    /** null-co has no bdrv_get_info(): QEMU shows neither dirty-flag nor cluster-size. */
    @Override
    public Optional<Boolean> dirtyFlag() {
        return Optional.empty();
    }

    @Override
    public String filename() {
        return filename;
    }
}
