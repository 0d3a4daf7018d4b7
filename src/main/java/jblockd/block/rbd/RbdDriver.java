package jblockd.block.rbd;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Base64;
import java.util.BitSet;
import java.util.List;
import java.util.Optional;

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
import jblockd.block.bitmap.PersistentBitmapStore;
import jblockd.block.bitmap.StoredBitmap;
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
    /** The snapshot this node shows, or null for the image's head. */
    private final String snapshot;
    /** The diff bitmaps of a snapshot node, computed at the first ask. */
    private PersistentBitmapStore diffBitmaps;

    private RbdDriver(RbdImage image, boolean readOnly, String filename, String snapshot) throws IoError {
        this.image = image;
        this.readOnly = readOnly;
        this.snapshot = snapshot;
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
            return new RbdDriver(img, ro, RbdFilenames.filename(o), o.snapshot());
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

    /**
     * Beyond QEMU: a node opened at snapshot S presents, for every older snapshot P of its image,
     * a read-only, disabled dirty bitmap named P whose bits are what changed from P to S
     * ({@code rbd_diff_iterate2} from P: exact in an object that existed at P, from the start of
     * an object created since to the end of its data), so that {@code blockdev-backup sync=bitmap
     * bitmap=P bitmap-mode=never} from this node copies a snapshot-diff incremental with the
     * same QMP as a dirty-bitmap one (docs/rbd.md). They are listed as persistent (they live in
     * the cluster, as long as the snapshots) and refuse every change as QEMU's read-only bitmaps
     * do.
     */
    @Override
    public synchronized Optional<PersistentBitmapStore> persistentBitmaps() {
        if (snapshot == null) {
            return Optional.empty();
        }
        if (diffBitmaps == null) {
            List<StoredBitmap> bitmaps = new ArrayList<>();
            try {
                for (RbdImage.Snap p : image.snapshots()) {
                    if (p.name().equals(snapshot)) {
                        break; // librbd lists oldest first: only the older ones
                    }
                    bitmaps.add(diffBitmap(p.name()));
                }
            } catch (IoError e) {
                throw new java.io.UncheckedIOException(new IoError(e.errno(),
                        "Cannot compute the rbd diff bitmaps of snapshot '" + snapshot + "': " + e.getMessage()));
            }
            diffBitmaps = new DiffBitmaps(List.copyOf(bitmaps));
        }
        return Optional.of(diffBitmaps);
    }

    /** Bitmap granularity of the diff bitmaps: QEMU's default for a new bitmap. */
    static final long DIFF_GRANULARITY = 64 << 10;

    private StoredBitmap diffBitmap(String from) throws IoError {
        BitSet bits = new BitSet();
        for (RbdImage.DiffExtent d : image.diff(from, 0, size, false)) {
            if (d.length() > 0) {
                bits.set((int) (d.offset() / DIFF_GRANULARITY),
                        (int) ((d.offset() + d.length() + DIFF_GRANULARITY - 1) / DIFF_GRANULARITY));
            }
        }
        return new StoredBitmap(from, DIFF_GRANULARITY, size, false, false, bits);
    }

    /** The read-only store of a snapshot node's diff bitmaps: nothing is ever written. */
    private record DiffBitmaps(List<StoredBitmap> loaded) implements PersistentBitmapStore {
        @Override
        public boolean readOnly() {
            return true;
        }

        @Override
        public void checkCanStore(String name, long granularity, List<String> alreadyPersistent)
                throws BitmapStoreException {
            throw new BitmapStoreException("Cannot store dirty bitmaps on an rbd snapshot");
        }

        @Override
        public void remove(String name) throws IOException {
            throw new IoError(Errno.EROFS, "an rbd snapshot's diff bitmaps cannot be removed");
        }

        @Override
        public void store(List<StoredBitmap> bitmaps) {
            // read-only: the node never stores
        }
    }

    /** sizeof(QEMUSnapshotInfo.id_str): QEMU refuses rbd snapshot names that do not fit. */
    private static final int SNAPSHOT_ID_BYTES = 128;

    @Override
    public Optional<jblockd.block.FormatSpecific> formatSpecific() {
        return Optional.of(new jblockd.block.FormatSpecific.Rbd());
    }
}
