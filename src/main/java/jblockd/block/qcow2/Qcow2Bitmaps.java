package jblockd.block.qcow2;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.locks.ReentrantLock;
import java.util.logging.Logger;

import jblockd.block.Errno;
import jblockd.block.FormatSpecific;
import jblockd.block.IoError;
import jblockd.block.bitmap.PersistentBitmapStore;
import jblockd.block.bitmap.StoredBitmap;
import jblockd.block.qcow2.BitmapFormat.Entry;

/**
 * The persistent dirty bitmaps of one open qcow2 image, byte-compatible with QEMU 7.2's
 * block/qcow2-bitmap.c (bitmaps.md §7-§8), plus jblockd's crash record ({@link IntentRecord},
 * docs/qcow2-bitmaps.md).
 * <ul>
 * <li>Open ({@link #open}): with autoclear bit 0 set the directory, every table and the data of
 * every entry not {@code in_use} are read and checked as QEMU checks them (a bad one refuses
 * the open, read-only too, before anything is written); an {@code in_use} entry is
 * inconsistent unless the crash record vouches for it. With the extension present but bit 0
 * clear, QEMU's warning and no bitmaps. A read-write open then clears every other autoclear
 * bit, drops a stale extension, and marks the entries {@code in_use} in place
 * (qcow2_load_dirty_bitmaps with update_ext_header_and_dir_in_place), all durable before the
 * driver returns.
 * <li>{@link #store}, {@link #remove}: QEMU's qcow2_store_persistent_dirty_bitmaps and
 * qcow2_co_remove_persistent_dirty_bitmap: new clusters, directory and header, flushed, and only
 * then the old clusters freed. Inconsistent entries stay as found.
 * <li>{@link #sync}, {@link #beforeWrite}: the crash record.
 * </ul>
 * Thread-safety: {@link #beforeWrite}'s fast path is lock-free; everything else holds
 * {@link #lock}, and takes the metadata lock inside it (never the other way round).
 */
final class Qcow2Bitmaps implements PersistentBitmapStore {
    private static final Logger LOG = Logger.getLogger(Qcow2Bitmaps.class.getName());

    /** QEMU 7.2's qcow2_read_extensions() warning, one line. */
    static final String LACKING_SUPPORT = "WARNING: a program lacking bitmap support modified this file, so all "
            + "bitmaps are now considered inconsistent. Some clusters may be leaked, run 'qemu-img check -r' "
            + "on the image file to fix.";

    private enum Mode {
        /** Consistent entries are {@code in_use} on disk; no crash record. */
        UNARMED,
        /** The crash record is armed: requests mark regions before they change data. */
        ARMED,
        /** A sync or store runs: requests wait for it (the slow path takes the lock). */
        BUSY,
        /** Stored: the entries are not {@code in_use}; the next request marks them again first. */
        STORED
    }

    private final Metadata meta;
    private final HostFile file;
    private final Qcow2Header header;
    private final int clusterSize;
    private final long size;
    private final boolean readOnly;
    /** For messages: the image file name quoted, or a generic name. */
    private final String image;
    private final IntentRecord intent;
    private final BitmapWriter writer;
    private final ReentrantLock lock = new ReentrantLock();
    private volatile Mode mode = Mode.UNARMED;
    /** The directory the header points at now, in order (empty: no bitmaps extension). */
    private volatile List<Entry> entries;
    /** Entries found {@code in_use} and not recovered: kept byte for byte until removed. */
    private final Set<String> inconsistent;
    private final List<StoredBitmap> loaded;

    private Qcow2Bitmaps(Metadata meta, boolean readOnly, String image, List<Entry> entries,
                         Set<String> inconsistent, List<StoredBitmap> loaded) {
        this.meta = meta;
        this.file = meta.file;
        this.header = meta.header;
        this.clusterSize = meta.clusterSize;
        this.size = meta.header.size;
        this.readOnly = readOnly;
        this.image = displayName(image);
        this.intent = new IntentRecord(file, clusterSize, size);
        this.writer = new BitmapWriter(meta, image);
        this.entries = List.copyOf(entries);
        this.inconsistent = inconsistent;
        this.loaded = List.copyOf(loaded);
    }

    // ------------------------------------------------------------------ open

    private static String displayName(String image) {
        return image == null ? "qcow2 image" : "'" + image + "'";
    }

    /**
     * Loads the bitmaps of a just-parsed image and, read-write, brings the header and directory
     * into the state QEMU leaves them in while it has the image open. {@code image} names the
     * image in errors (null: unknown).
     */
    static Qcow2Bitmaps open(Metadata meta, boolean readOnly, String image) throws IOException {
        Qcow2Header h = meta.header;
        String name = displayName(image);
        byte[] ext = h.extension(Qcow2Header.EXT_BITMAPS);
        boolean consistentBit = h.version >= 3 && (h.autoclear & Qcow2Header.AUTOCLEAR_BITMAPS) != 0;
        List<Entry> entries = List.of();
        BitmapFormat.Extension x = null;
        if (ext != null && !consistentBit) {
            LOG.warning(name + ": " + LACKING_SUPPORT);
        } else if (ext != null) {
            try {
                x = BitmapFormat.Extension.decode(ext, meta.clusterSize);
                entries = BitmapFormat.parse(BitmapReader.readDirectory(meta.file, x), x.count(), meta.clusterSize,
                        h.size);
            } catch (IoError e) {
                throw new IoError(e.errno(), "Could not open " + name + ": " + e.getMessage(), e);
            }
        }
        // The crash record counts only while jblockd alone wrote the image (autoclear bit 63)
        // and for the directory it was written with.
        BitSet vouched = new BitSet();
        if (x != null && (h.autoclear & Qcow2Header.AUTOCLEAR_JBLOCKD_INTENT) != 0) {
            IntentRecord.Extension ie = IntentRecord.Extension.decode(h.extension(Qcow2Header.EXT_JBLOCKD_INTENT));
            if (ie != null && ie.boundTo(x)) {
                vouched = ie.entries();
            }
        }
        Set<String> inconsistent = java.util.concurrent.ConcurrentHashMap.newKeySet();
        List<StoredBitmap> loaded = new ArrayList<>(entries.size());
        for (int i = 0; i < entries.size(); i++) {
            Entry e = entries.get(i);
            BitSet bits = null;
            try {
                if (!e.inUse()) {
                    bits = BitmapReader.readBits(meta.file, meta.clusterSize, h.size, e,
                            BitmapReader.readTable(meta.file, meta.clusterSize, e), false);
                } else if (vouched.get(i)) {
                    bits = BitmapReader.recover(meta.file, meta.clusterSize, h.size, e);
                }
            } catch (IoError err) {
                throw new IoError(err.errno(), "Could not open " + name + ": " + err.getMessage(), err);
            }
            if (bits == null) {
                inconsistent.add(e.name());
                bits = new BitSet();
            } else if (e.inUse()) {
                LOG.info(name + ": bitmap '" + e.name() + "' recovered from jblockd's write-intent record");
            }
            loaded.add(new StoredBitmap(e.name(), e.granularity(), h.size, e.auto(), inconsistent.contains(e.name()),
                    bits));
        }
        Qcow2Bitmaps b = new Qcow2Bitmaps(meta, readOnly, image, entries, inconsistent, loaded);
        if (!readOnly) {
            b.openReadWrite(ext != null && x == null);
        }
        return b;
    }

    /**
     * The header cleanup of a read-write open: other autoclear bits, a stale bitmaps extension
     * ({@code dropExtension}) and a consumed crash record go, in one header write, and the
     * consistent entries are marked {@code in_use} (QEMU's in-place protocol: autoclear bit 0
     * clear while the directory is rewritten, so that a torn directory is never trusted).
     */
    private void openReadWrite(boolean dropExtension) throws IOException {
        long want = entries.isEmpty() ? 0 : Qcow2Header.AUTOCLEAR_BITMAPS;
        boolean mark = false;
        for (Entry e : entries) {
            mark |= !e.inUse();
        }
        if (header.autoclear == want && !dropExtension && header.extension(Qcow2Header.EXT_JBLOCKD_INTENT) == null
                && !mark) {
            return;
        }
        meta.lock.lock();
        try {
            if (dropExtension) {
                header.setExtension(Qcow2Header.EXT_BITMAPS, null);
            }
            header.setExtension(Qcow2Header.EXT_JBLOCKD_INTENT, null);
            header.autoclear = want;
            if (mark) {
                markInUseInPlace(); // its first header write carries the changes above
            } else {
                meta.writeHeader();
                file.flush();
            }
        } finally {
            meta.lock.unlock();
        }
    }

    /**
     * update_ext_header_and_dir_in_place(): with autoclear bit 0 durably clear, the directory is
     * rewritten in place with every entry {@code in_use}, then bit 0 is set again. Caller holds
     * the metadata lock.
     */
    private void markInUseInPlace() throws IOException {
        List<Entry> next = new ArrayList<>(entries.size());
        for (Entry e : entries) {
            next.add(e.withFlags(e.flags() | BitmapFormat.FLAG_IN_USE));
        }
        header.autoclear &= ~Qcow2Header.AUTOCLEAR_BITMAPS;
        meta.writeHeader();
        file.flush();
        file.write(directory().directoryOffset(), ByteBuffer.wrap(BitmapFormat.serialize(next)));
        file.flush();
        entries = List.copyOf(next);
        header.autoclear |= Qcow2Header.AUTOCLEAR_BITMAPS;
        meta.writeHeader();
        file.flush();
    }

    // ------------------------------------------------------------------ reading tables and data

    private BitmapFormat.Extension directory() throws IoError {
        byte[] ext = header.extension(Qcow2Header.EXT_BITMAPS);
        return ext == null ? null : BitmapFormat.Extension.decode(ext, clusterSize);
    }

    private long[] readTable(Entry e) throws IOException {
        return BitmapReader.readTable(file, clusterSize, e);
    }

    // ------------------------------------------------------------------ PersistentBitmapStore

    @Override
    public List<StoredBitmap> loaded() {
        return loaded;
    }

    @Override
    public boolean readOnly() {
        return readOnly;
    }

    /** qcow2_co_can_store_new_dirty_bitmap(), QEMU's checks in its order. */
    @Override
    public void checkCanStore(String name, long granularity, List<String> alreadyPersistent)
            throws BitmapStoreException {
        if (alreadyPersistent.contains(name) || inconsistent.contains(name)) {
            throw new BitmapStoreException("Bitmap already exists: " + name, false);
        }
        if (header.version < 3) {
            throw new BitmapStoreException("Cannot store dirty bitmaps in qcow2 v2 files");
        }
        String why = BitmapFormat.constraintViolation(name, granularity, size, clusterSize);
        if (why == null && BitmapFormat.granules(size, granularity) > Integer.MAX_VALUE) {
            // jblockd's in-memory limit (a BitSet); QEMU's own limit is 2^32 bits
            why = "Too much space will be occupied by the bitmap. Use larger granularity";
        }
        if (why != null) {
            throw new BitmapStoreException(why);
        }
        Set<String> names = new LinkedHashSet<>(alreadyPersistent);
        names.addAll(inconsistent);
        names.add(name);
        if (names.size() > BitmapFormat.MAX_BITMAPS) {
            throw new BitmapStoreException("Maximum number of persistent bitmaps is already reached");
        }
        long dir = 0;
        for (String n : names) {
            dir += BitmapFormat.entrySize(BitmapFormat.nameBytes(n));
        }
        if (dir > BitmapFormat.MAX_DIRECTORY_SIZE) {
            throw new BitmapStoreException("Not enough space in the bitmap directory");
        }
    }

    /**
     * True when the image has or records persistent bitmaps (entries on disk, bitmaps loaded,
     * the crash record armed): their tables and the crash record are sized for the image's
     * length, so jblockd does not resize such an image yet.
     */
    boolean any() {
        return !entries.isEmpty() || !loaded.isEmpty() || mode != Mode.UNARMED;
    }

    /** The directory for qemu-img info's format-specific {@code bitmaps}: the image as it is now. */
    List<FormatSpecific.Qcow2Bitmap> info() {
        List<FormatSpecific.Qcow2Bitmap> out = new ArrayList<>();
        for (Entry e : entries) {
            List<String> flags = new ArrayList<>(2);
            if (e.inUse()) {
                flags.add("in-use");
            }
            if (e.auto()) {
                flags.add("auto");
            }
            out.add(new FormatSpecific.Qcow2Bitmap(e.name(), e.granularity(), flags));
        }
        return out;
    }

    @Override
    public void beforeWrite(long offset, long length) throws IOException {
        if (readOnly || length <= 0) {
            return;
        }
        intent.stamp(offset, length);
        Mode m = mode;
        if (m == Mode.UNARMED || m == Mode.ARMED && intent.covered(offset, length)) {
            return;
        }
        intent.announce(offset, length);
        lock.lock();
        try {
            if (mode == Mode.STORED) {
                reopenInUse();
            }
            if (mode == Mode.ARMED) {
                markOrDisarm(offset, length);
            } else {
                intent.dropAnnounced(); // nothing to mark: every waiter finds the same
            }
        } finally {
            lock.unlock();
        }
    }

    /**
     * The intent mark for a request; when it cannot be made durable the record is given up
     * (its marker cleared durably) and the request goes on, as under QEMU; when that fails too
     * the request fails, since the record would vouch for bits that miss it. Caller holds the lock.
     */
    private void markOrDisarm(long offset, long length) throws IOException {
        try {
            intent.mark(offset, length);
        } catch (IOException e) {
            try {
                meta.lock.lock();
                try {
                    disarm();
                } finally {
                    meta.lock.unlock();
                }
            } catch (IOException second) {
                e.addSuppressed(second);
                throw e;
            }
            LOG.warning(image + ": bitmaps: write-intent mark failed (" + e.getMessage()
                    + "); the crash record is off until the next sync");
        }
    }

    /** Clears the marker and drops the record, durably. Caller holds both locks. */
    private void disarm() throws IOException {
        header.autoclear &= ~Qcow2Header.AUTOCLEAR_JBLOCKD_INTENT;
        header.setExtension(Qcow2Header.EXT_JBLOCKD_INTENT, null);
        meta.writeHeader();
        file.flush();
        intent.setTracked(List.of());
        mode = Mode.UNARMED;
    }

    /** After a store, before the next data change: the entries {@code in_use} again. Caller holds the lock. */
    private void reopenInUse() throws IOException {
        boolean mark = false;
        for (Entry e : entries) {
            mark |= !e.inUse();
        }
        if (mark) {
            meta.lock.lock();
            try {
                markInUseInPlace();
            } finally {
                meta.lock.unlock();
            }
        }
        mode = Mode.UNARMED;
    }

    @Override
    public void remove(String name) throws IOException {
        lock.lock();
        try {
            Entry gone = null;
            List<Entry> next = new ArrayList<>();
            for (Entry e : entries) {
                if (e.name().equals(name)) {
                    gone = e;
                } else {
                    next.add(e);
                }
            }
            if (gone == null) {
                return; // absence is not an error (qcow2_co_remove_persistent_dirty_bitmap)
            }
            if (readOnly) {
                throw new IoError(Errno.EROFS, "No write access");
            }
            List<IntentRecord.Tracked> tracked = new ArrayList<>(intent.tracked());
            IntentRecord.Tracked t = null;
            for (IntentRecord.Tracked k : tracked) {
                if (k.name.equals(name)) {
                    t = k;
                }
            }
            tracked.remove(t);
            long[] data = t != null ? t.clusters : readTableQuietly(gone);
            meta.lock.lock();
            try {
                BitmapFormat.Extension old = directory();
                commitDirectory(next, tracked, new ArrayList<>());
                writer.freeAll(old, List.of(gone), data == null ? List.of() : List.of(data));
            } finally {
                meta.lock.unlock();
            }
            inconsistent.remove(name);
            if (mode == Mode.ARMED && !intent.armed()) {
                mode = Mode.UNARMED;
            }
        } finally {
            lock.unlock();
        }
    }

    /** The table's data clusters, or null when the table cannot be read (its clusters then leak). */
    private long[] readTableQuietly(Entry e) {
        try {
            return readTable(e);
        } catch (IOException | RuntimeException ex) {
            return null;
        }
    }

    @Override
    public void store(List<StoredBitmap> bitmaps) throws IOException {
        lock.lock();
        try {
            if (readOnly) {
                // QEMU skips the read-only bitmaps it loaded; anything else cannot be written
                Set<String> have = new HashSet<>();
                loaded.forEach(b -> have.add(b.name()));
                for (StoredBitmap b : bitmaps) {
                    if (!have.contains(b.name())) {
                        throw new IoError(Errno.EROFS, "No write access");
                    }
                }
                return;
            }
            checkList(bitmaps);
            Mode before = mode;
            List<Entry> oldEntries = entries;
            mode = Mode.BUSY;
            try {
                writeStore(bitmaps);
            } finally {
                // Once the header points at the stored directory its entries are not in_use.
                mode = entries != oldEntries ? Mode.STORED : before;
            }
        } finally {
            lock.unlock();
        }
    }

    /** What QEMU's store refuses, with its texts; plus names of inconsistent entries kept in the image. */
    private void checkList(List<StoredBitmap> bitmaps) throws IoError {
        if (header.version < 3 && !bitmaps.isEmpty()) {
            throw new IoError(Errno.ENOTSUP, "Cannot store dirty bitmaps in qcow2 v2 files");
        }
        Set<String> names = new HashSet<>(inconsistent);
        long dir = 0;
        for (String n : inconsistent) {
            dir += BitmapFormat.entrySize(BitmapFormat.nameBytes(n));
        }
        for (StoredBitmap b : bitmaps) {
            if (b.inconsistent()) {
                throw new IllegalArgumentException("inconsistent bitmap '" + b.name() + "' cannot be stored");
            }
            if (b.length() != size) {
                throw new IoError(Errno.EINVAL, "Bitmap '" + b.name() + "' covers " + b.length()
                        + " bytes, the image " + size);
            }
            String why = BitmapFormat.constraintViolation(b.name(), b.granularity(), size, clusterSize);
            if (why == null && BitmapFormat.granules(size, b.granularity()) > Integer.MAX_VALUE) {
                why = "Too much space will be occupied by the bitmap. Use larger granularity";
            }
            if (why != null) {
                throw new IoError(Errno.EINVAL, "Bitmap '" + b.name() + "' doesn't satisfy the constraints: " + why);
            }
            if (!names.add(b.name())) {
                throw new IoError(Errno.EINVAL, "Bitmap '" + b.name() + "' already exists in the image");
            }
            dir += BitmapFormat.entrySize(BitmapFormat.nameBytes(b.name()));
        }
        if (names.size() > BitmapFormat.MAX_BITMAPS) {
            throw new IoError(Errno.EINVAL, "Too many persistent bitmaps");
        }
        if (dir > BitmapFormat.MAX_DIRECTORY_SIZE) {
            throw new IoError(Errno.EINVAL, "Bitmap directory is too large");
        }
    }

    /**
     * qcow2_store_persistent_dirty_bitmaps(): data clusters for the non-zero clusters of each
     * bitmap, its table, then one new directory, all durable before the header switches to it;
     * then the old directory and the replaced bitmaps' clusters are freed. Caller holds the lock.
     */
    private void writeStore(List<StoredBitmap> bitmaps) throws IOException {
        Map<String, StoredBitmap> todo = new LinkedHashMap<>();
        bitmaps.forEach(b -> todo.put(b.name(), b));
        Map<String, IntentRecord.Tracked> tracked = new HashMap<>();
        intent.tracked().forEach(t -> tracked.put(t.name, t));
        List<Entry> next = new ArrayList<>();
        List<Entry> replaced = new ArrayList<>();
        List<long[]> replacedData = new ArrayList<>();
        List<long[]> fresh = new ArrayList<>(); // {offset, bytes} allocated here
        meta.lock.lock();
        try {
            BitmapFormat.Extension old = directory();
            try {
                for (Entry e : entries) {
                    if (inconsistent.contains(e.name())) {
                        next.add(e);
                        continue;
                    }
                    replaced.add(e);
                    IntentRecord.Tracked t = tracked.get(e.name());
                    long[] data = t != null ? t.clusters : readTableQuietly(e);
                    if (data != null) {
                        replacedData.add(data);
                    }
                    StoredBitmap b = todo.remove(e.name());
                    if (b != null) {
                        next.add(writer.writeBitmap(b, fresh));
                    }
                }
                for (StoredBitmap b : todo.values()) {
                    next.add(writer.writeBitmap(b, fresh));
                }
            } catch (IOException | RuntimeException e) {
                writer.freeFresh(fresh);
                throw e;
            }
            commitDirectory(next, List.of(), fresh);
            writer.freeAll(old, replaced, replacedData);
        } finally {
            meta.lock.unlock();
        }
    }

    /**
     * update_ext_header_and_dir(): {@link BitmapWriter#writeDirectory} then
     * {@link #commitHeader}. Caller holds both locks.
     */
    private void commitDirectory(List<Entry> next, List<IntentRecord.Tracked> tracked, List<long[]> fresh)
            throws IOException {
        commitHeader(writer.writeDirectory(next, fresh), next, tracked);
    }

    /** {@link BitmapWriter#switchHeader}, then publishes the directory and what the record tracks. */
    private void commitHeader(BitmapFormat.Extension x, List<Entry> next, List<IntentRecord.Tracked> tracked)
            throws IOException {
        boolean armed;
        try {
            armed = writer.switchHeader(x, next, tracked);
        } catch (IOException | RuntimeException e) {
            intent.setTracked(List.of());
            throw e;
        }
        entries = List.copyOf(next);
        intent.setTracked(armed ? tracked : List.of());
    }

    // ------------------------------------------------------------------ the crash record

    @Override
    public void sync(List<StoredBitmap> bitmaps) throws IOException {
        if (readOnly || header.version < 3) {
            return;
        }
        lock.lock();
        try {
            checkList(bitmaps);
            if (mode == Mode.STORED) {
                reopenInUse();
            }
            Mode before = mode;
            List<IntentRecord.Tracked> oldTracked = intent.tracked();
            mode = Mode.BUSY;
            boolean done = false;
            try {
                writeSync(bitmaps);
                done = true;
            } catch (IOException | RuntimeException e) {
                recoverFromFailedSync(before, oldTracked, e);
                throw e;
            } finally {
                if (done) {
                    mode = intent.armed() ? Mode.ARMED : Mode.UNARMED;
                }
            }
        } finally {
            lock.unlock();
        }
    }

    /**
     * A sync failed part-way: marks it set may not be durable. The record is given up if that
     * can be made durable; else every region is unmarked, so that requests mark again.
     */
    private void recoverFromFailedSync(Mode before, List<IntentRecord.Tracked> oldTracked, Exception cause) {
        meta.lock.lock();
        try {
            disarm();
        } catch (IOException | RuntimeException e) {
            cause.addSuppressed(e);
            for (IntentRecord.Tracked t : oldTracked) {
                for (int s = 0; s < t.sectors; s++) {
                    t.setMarked(s, false);
                }
            }
            intent.setTracked(oldTracked);
            mode = before == Mode.ARMED ? Mode.ARMED : Mode.UNARMED;
        } finally {
            meta.lock.unlock();
        }
    }

    /**
     * The sync proper: every bitmap of the list gets (or keeps) a full layout holding its bits
     * except where requests may be changing data, the directory marks them {@code in_use}, and
     * the header vouches for them. Caller holds the lock, the gate is closed.
     */
    private void writeSync(List<StoredBitmap> bitmaps) throws IOException {
        int since = intent.closeEpoch();
        Map<String, StoredBitmap> todo = new LinkedHashMap<>();
        bitmaps.forEach(b -> todo.put(b.name(), b));
        Map<String, IntentRecord.Tracked> old = new HashMap<>();
        intent.tracked().forEach(t -> old.put(t.name, t));
        List<Entry> next = new ArrayList<>();
        List<IntentRecord.Tracked> tracked = new ArrayList<>();
        List<Entry> replaced = new ArrayList<>();
        List<long[]> replacedData = new ArrayList<>();
        boolean structural = false;
        boolean flagsChanged = false;
        boolean raised = false;
        meta.lock.lock();
        try {
            List<long[]> fresh = new ArrayList<>();
            for (Entry e : entries) {
                StoredBitmap b = inconsistent.contains(e.name()) ? null : todo.remove(e.name());
                if (b == null) {
                    next.add(e);
                    continue;
                }
                int gb = Long.numberOfTrailingZeros(b.granularity());
                int flags = BitmapFormat.FLAG_IN_USE | (b.enabled() ? BitmapFormat.FLAG_AUTO : 0);
                IntentRecord.Tracked t = old.get(e.name());
                if (t != null && t.granularityBits == gb) {
                    t = t.withRecording(b.enabled());
                    raised |= intent.writeLayout(t, b.bits(), since, false);
                } else if (gb == e.granularityBits()
                        && e.tableSize() == BitmapFormat.tableSize(size, b.granularity(), clusterSize)) {
                    t = fillInPlace(e, b, since);
                    raised = true; // newly vouched for: its whole layout must be durable
                } else {
                    t = newLayout(b, since, fresh);
                    replaced.add(e);
                    long[] data = readTableQuietly(e);
                    if (data != null) {
                        replacedData.add(data);
                    }
                    structural = true;
                }
                tracked.add(t);
                Entry ne = new Entry(t.tableOffset, (int) BitmapFormat.tableSize(size, b.granularity(), clusterSize),
                        flags, gb, e.name());
                flagsChanged |= ne.flags() != e.flags();
                next.add(ne);
            }
            for (StoredBitmap b : todo.values()) {
                IntentRecord.Tracked t = newLayout(b, since, fresh);
                tracked.add(t);
                int flags = BitmapFormat.FLAG_IN_USE | (b.enabled() ? BitmapFormat.FLAG_AUTO : 0);
                next.add(new Entry(t.tableOffset, t.clusters.length, flags, t.granularityBits, b.name()));
                structural = true;
            }
            if (structural) {
                BitmapFormat.Extension oldDir = directory();
                commitDirectory(next, tracked, fresh);
                writer.freeAll(oldDir, replaced, replacedData);
                return;
            }
            // Same entries in the same places. What gained bits (and tables filled in place) must
            // be durable before the header vouches for it; a sync that only lowered sectors
            // needs no flush (the usual periodic one). Then the flags in place: only whole 4-byte
            // flag fields change, each within one sector, so any mix of old and new sectors is a
            // valid directory (QEMU's protocol for other in-place changes clears autoclear bit 0
            // around them instead).
            if (raised || flagsChanged) {
                meta.flushMetadata();
            }
            BitmapFormat.Extension x = directory();
            if (flagsChanged) {
                file.write(x.directoryOffset(), ByteBuffer.wrap(BitmapFormat.serialize(next)));
                file.flush();
            }
            commitHeader(x, next, tracked);
        } finally {
            meta.lock.unlock();
        }
    }

    /**
     * A layout for an entry whose table fits: the missing data clusters are allocated, the data
     * written whole, and only then (refcounts and data durable) the table rewritten in place.
     * The entry is {@code in_use} and not vouched for yet, so QEMU never reads these bits.
     * Caller holds both locks.
     */
    private IntentRecord.Tracked fillInPlace(Entry e, StoredBitmap b, int since) throws IOException {
        long[] table = readTable(e);
        long[] clusters = new long[table.length];
        boolean grew = false;
        for (int i = 0; i < table.length; i++) {
            long off = table[i] & BitmapFormat.TABLE_OFFSET;
            if (off == 0) {
                off = meta.allocClusters(1);
                grew = true;
            }
            clusters[i] = off;
        }
        IntentRecord.Tracked t = new IntentRecord.Tracked(e.name(), e.granularityBits(),
                BitmapFormat.granules(size, e.granularity()), b.enabled(), e.tableOffset(), clusters, null, null);
        intent.writeLayout(t, b.bits(), since, true);
        if (grew) {
            meta.flushMetadata();
            ByteBuffer tb = ByteBuffer.allocate(clusters.length * 8);
            tb.asLongBuffer().put(clusters);
            file.write(e.tableOffset(), tb);
        }
        return t;
    }

    /** A new table and data clusters for {@code b}, written whole. Caller holds both locks. */
    private IntentRecord.Tracked newLayout(StoredBitmap b, int since, List<long[]> fresh) throws IOException {
        int n = (int) BitmapFormat.tableSize(size, b.granularity(), clusterSize);
        long[] clusters = new long[n];
        for (int i = 0; i < n; i++) {
            clusters[i] = meta.allocClusters(1);
            fresh.add(new long[] {clusters[i], clusterSize});
        }
        long tableOffset = writer.allocBytes((long) n * 8, fresh);
        IntentRecord.Tracked t = new IntentRecord.Tracked(b.name(), Long.numberOfTrailingZeros(b.granularity()),
                BitmapFormat.granules(size, b.granularity()), b.enabled(), tableOffset, clusters, null, null);
        intent.writeLayout(t, b.bits(), since, true);
        ByteBuffer tb = ByteBuffer.allocate(n * 8);
        tb.asLongBuffer().put(clusters);
        file.write(tableOffset, tb);
        return t;
    }
}
