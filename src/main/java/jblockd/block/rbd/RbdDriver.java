package jblockd.block.rbd;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Optional;

import jblockd.block.Allocation;
import jblockd.block.BlockDriver;
import jblockd.block.BlockdevOptions;
import jblockd.block.Capabilities;
import jblockd.block.DriverRegistry;
import jblockd.block.Errno;
import jblockd.block.Extent;
import jblockd.block.IoError;
import jblockd.block.ObjectLookup;

/**
 * The {@code rbd} protocol driver (QEMU 7.2's block/rbd.c): a Ceph RBD image through librbd,
 * called with {@code java.lang.foreign} ({@link Librbd}). Connection options as QEMU turns
 * them into cluster settings (user, conf file, {@code mon_host} from {@code server},
 * {@code key} from {@code key-secret}, {@code auth_client_required}, a filename's other pairs);
 * asynchronous I/O, several requests in flight; block status from {@code rbd_diff_iterate2}
 * per whole object when the image has fast-diff (QEMU's rule: otherwise everything is data);
 * write-zeroes with librbd's own call (a discard does not promise zeroes); resize; a snapshot
 * opened read-only.
 */
public final class RbdDriver implements BlockDriver, AutoCloseable {
    private final RbdImage image;
    private final boolean readOnly;
    private final boolean fastDiff;
    private final String filename;
    private final int objectSize;
    private volatile long size;

    private RbdDriver(RbdImage image, boolean readOnly, String filename) throws IoError {
        this.image = image;
        this.readOnly = readOnly;
        this.filename = filename;
        this.size = image.size();
        this.fastDiff = (image.features() & Librbd.FEATURE_FAST_DIFF) != 0;
        this.objectSize = (int) Math.min(Integer.MAX_VALUE, image.objectSize());
    }

    /** The libraries, loaded on the first rbd open (a daemon without Ceph never touches them). */
    private static final class LibraryHolder {
        private Librbd lib;
        private String missing;

        synchronized Librbd get() throws IoError {
            if (lib == null && missing == null) {
                StringBuilder why = new StringBuilder();
                lib = Librbd.load(why).orElse(null);
                if (lib == null) {
                    missing = why.toString();
                }
            }
            if (lib == null) {
                throw new IoError(Errno.ENOTSUP, "the rbd driver needs librbd and librados (Debian: librbd1): "
                        + missing);
            }
            return lib;
        }
    }

    public static void register(DriverRegistry r) {
        LibraryHolder holder = new LibraryHolder();
        r.<BlockdevOptions.Rbd>register("rbd", (o, ctx) -> open(holder.get(), o, ctx.objects()));
        r.registerProtocol("rbd", (filename, common, filenames) -> RbdFilenames.parse(filename, common));
    }

    static RbdDriver open(Librbd lib, BlockdevOptions.Rbd o, ObjectLookup objects) throws IOException {
        List<String[]> settings = new ArrayList<>();
        if (o.servers() != null && !o.servers().isEmpty()) {
            List<String> hosts = new ArrayList<>();
            for (String[] hp : o.servers()) {
                hosts.add((hp[0].contains(":") ? "[" + hp[0] + "]" : hp[0]) + ":" + hp[1]);
            }
            settings.add(new String[] {"mon_host", String.join(";", hosts)});
        }
        if (o.keySecret() != null) {
            // block/rbd.c qemu_rbd_set_auth: the secret's bytes, base64-encoded, are the key
            settings.add(new String[] {"key", Base64.getEncoder().encodeToString(objects.secret(o.keySecret()))});
        }
        if (o.authClientRequired() != null && !o.authClientRequired().isEmpty()) {
            settings.add(new String[] {"auth_client_required", String.join(";", o.authClientRequired())});
        }
        settings.addAll(o.confPairs());
        boolean ro = o.common().readOnly() || o.snapshot() != null;
        RbdImage img = RbdImage.open(lib, new RbdImage.Connection(o.user(), o.conf(), settings), o.pool(),
                o.namespace(), o.image(), o.snapshot(), ro);
        try {
            return new RbdDriver(img, ro, RbdFilenames.filename(o));
        } catch (IoError e) {
            img.close();
            throw e;
        }
    }

    @Override
    public String driverName() {
        return "rbd";
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        image.read(offset, dst);
    }

    @Override
    public void write(long offset, ByteBuffer src, boolean fua) throws IOException {
        image.write(offset, src);
        if (fua) {
            image.flush();
        }
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        image.writeZeroes(offset, length);
    }

    @Override
    public void discard(long offset, long length) throws IOException {
        image.discard(offset, length);
    }

    @Override
    public void flush() throws IOException {
        image.flush();
    }

    @Override
    public long length() {
        return size;
    }

    /**
     * block/rbd.c qemu_rbd_co_block_status: without fast-diff everything is data; with it the
     * first allocated whole object at or after {@code offset} decides: zero up to it, data in it
     * and in the allocated objects right after it (QEMU answers one object at a time).
     */
    @Override
    public Extent status(long offset, long length) throws IOException {
        if (!fastDiff) {
            return new Extent(offset, length, Allocation.DATA);
        }
        long limit = offset + length;
        long dataEnd = -1; // end of the data run that starts at offset, once found
        for (RbdImage.DiffExtent d : image.diff(null, offset, length, true)) {
            long end = d.offset() + d.length();
            if (!d.exists() || end <= offset) {
                continue;
            }
            if (dataEnd < 0) {
                if (d.offset() > offset) {
                    return new Extent(offset, Math.min(d.offset(), limit) - offset, Allocation.ZERO);
                }
                dataEnd = end;
            } else if (d.offset() <= dataEnd) {
                dataEnd = Math.max(dataEnd, end); // the next object continues the run
            } else {
                break;
            }
        }
        return dataEnd < 0 ? new Extent(offset, length, Allocation.ZERO)
                : new Extent(offset, Math.min(dataEnd, limit) - offset, Allocation.DATA);
    }

    @Override
    public Capabilities capabilities() {
        return new Capabilities(readOnly, true, true, true, 1, false);
    }

    @Override
    public void truncate(long newSize) throws IOException {
        image.resize(newSize);
        size = newSize;
    }

    @Override
    public void close() {
        image.close();
    }

    @Override
    public String filename() {
        return filename;
    }

    // allocatedFileSize and dirtyFlag stay the defaults: QEMU's rbd has no
    // bdrv_get_allocated_file_size (no actual-size) and its get_info gives dirty-flag false

    /** block/rbd.c qemu_rbd_getinfo: the object size is the cluster size. */
    @Override
    public int clusterSize() {
        return objectSize;
    }

    @Override
    public Optional<jblockd.block.FormatSpecific> formatSpecific() {
        return Optional.of(new jblockd.block.FormatSpecific.Rbd());
    }
}
