package jblockd.block.rbd;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Optional;
import java.util.OptionalLong;

import jblockd.block.Allocation;
import jblockd.block.BlockDriver;
import jblockd.block.BlockdevOptions;
import jblockd.block.Capabilities;
import jblockd.block.DriverRegistry;
import jblockd.block.Errno;
import jblockd.block.Extent;
import jblockd.block.InternalSnapshots;
import jblockd.block.IoError;
import jblockd.block.SnapshotInfo;
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

    /** QEMU's rbd has no bdrv_get_allocated_file_size: query-block omits actual-size. */
    @Override
    public OptionalLong allocatedFileSize() {
        return OptionalLong.empty();
    }

    @Override
    public Optional<Boolean> dirtyFlag() {
        return Optional.of(false);
    }

    /** block/rbd.c qemu_rbd_getinfo: the object size is the cluster size. */
    @Override
    public int clusterSize() {
        return objectSize;
    }

    /** block/rbd.c's snapshot callbacks: RBD snapshots, named by the user, the name is the id. */
    @Override
    public Optional<InternalSnapshots> internalSnapshots() {
        return Optional.of(snapshots);
    }

    private final InternalSnapshots snapshots = new InternalSnapshots() {
        /**
         * qemu_rbd_snap_list(): id and name are the snapshot's name, vm-state-size the image's
         * size at the snapshot, no dates or guest clock (zero), icount zero (QEMU's zeroed table).
         */
        @Override
        public List<SnapshotInfo> list() throws IOException {
            return image.snapshots().stream()
                    .map(s -> new SnapshotInfo(s.name(), s.name(), s.size(), 0, 0, 0, 0L)).toList();
        }

        /** qemu_rbd_snap_create(): a name must fit QEMU's 128-byte id (ERANGE otherwise). */
        @Override
        public void create(String name) throws IOException {
            if (name.getBytes(java.nio.charset.StandardCharsets.UTF_8).length >= SNAPSHOT_ID_BYTES) {
                throw new IoError(Errno.EIO, RbdImage.strerror(34, Errno.EIO));
            }
            image.createSnapshot(name);
        }

        /** qemu_rbd_snap_remove(): by name; an id must be that name. */
        @Override
        public void delete(String id, String name) throws IOException {
            if (name == null) {
                throw new IoError(Errno.EINVAL, "rbd need a valid snapshot name");
            }
            if (id != null && !id.equals(name)) {
                throw new IoError(Errno.EINVAL,
                        "rbd do not support snapshot id, it should be NULL or equal to snapshot name");
            }
            try {
                image.removeSnapshot(name);
            } catch (IoError e) {
                throw new IoError(e.errno(), "Failed to remove the snapshot: " + e.getMessage());
            }
        }
    };

    /** sizeof(QEMUSnapshotInfo.id_str): QEMU refuses rbd snapshot names that do not fit. */
    private static final int SNAPSHOT_ID_BYTES = 128;

    @Override
    public Optional<jblockd.block.FormatSpecific> formatSpecific() {
        return Optional.of(new jblockd.block.FormatSpecific.Rbd());
    }
}
