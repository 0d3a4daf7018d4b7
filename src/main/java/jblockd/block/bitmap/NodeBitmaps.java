package jblockd.block.bitmap;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.Optional;
import java.util.concurrent.locks.StampedLock;

/**
 * The dirty bitmaps of one node (QEMU's {@code bs->dirty_bitmaps}), newest first as QEMU
 * prepends them, and the node's recording hook: {@link #mark} is called by
 * {@link jblockd.block.BlockNode} for every data-changing request that reached the driver.
 * <p>
 * Persistence: with a {@link PersistentBitmapStore} (the driver's), the stored bitmaps are
 * loaded when the node is created ({@link #attachStore}), a persistent bitmap is removed from the
 * image at once ({@link #remove}) and the consistent persistent ones are written at a clean close
 * ({@link #storeOnClose}).
 * <p>
 * Concurrency. Requests mark without the monitor: {@link #mark} reads one volatile field (the
 * published set of recording bitmaps) and returns when there is nothing to do, so a node
 * without recording bitmaps pays one volatile read per write. When there are some, the marks
 * run under the read side of a
 * {@link StampedLock}; every change of which bitmaps record (add, enable, disable, freeze,
 * abdicate, reclaim, remove) takes the write side, so when it returns no write that completed
 * before it is still about to mark the old set: a frozen bitmap's bits never change afterwards,
 * and a reclaim loses no write of its successor. State changes are serialised on this object's
 * monitor, always taken before the mark lock (marks never take the monitor while holding it).
 */
public final class NodeBitmaps {
    /** BDRV_BITMAP_MAX_NAME_SIZE: names of up to 1023 bytes. */
    public static final int MAX_NAME_BYTES = 1023;

    /** The node length, as the node reports it; bitmaps cover it rounded up to whole sectors. */
    @FunctionalInterface
    public interface Length {
        long get() throws IOException;
    }

    /**
     * What the hot path needs, published as one immutable object: the bits of every enabled
     * bitmap (successors included), every bitmap's bits (a growable node grows them all), and
     * whether a write has anything to do at all.
     */
    private record Marks(DirtyBitmap[] recording, DirtyBitmap[] all, boolean active) {
    }

    private static final Marks NONE = new Marks(new DirtyBitmap[0], new DirtyBitmap[0], false);

    private final String nodeName;
    private final Length nodeLength;
    /** Guarded by this; changed by {@link #reattachStore}. */
    private boolean nodeReadOnly;
    private final boolean growable;
    private final long alignment;
    /** Newest first. Guarded by this. */
    private final List<BlockDirtyBitmap> list = new ArrayList<>();
    /** An immutable copy of {@link #list}, for lookups that must not take the monitor. */
    private volatile List<BlockDirtyBitmap> published = List.of();
    /** The whole hot path reads only this. */
    private volatile Marks marks = NONE;
    private final StampedLock markLock = new StampedLock();
    /** Guarded by this. */
    private PersistentBitmapStore store;
    private boolean stored;

    /**
     * @param growable  writes may extend the node (a file node): bitmaps grow with it, the new
     *                  area clean (block/io.c bdrv_co_write_req_finish -> bdrv_dirty_bitmap_truncate)
     * @param alignment the node's request alignment: QEMU marks the padded request it sends down,
     *                  so an unaligned write marks every granule of the aligned range
     */
    public NodeBitmaps(String nodeName, Length nodeLength, boolean nodeReadOnly, boolean growable, long alignment) {
        this.nodeName = Objects.requireNonNull(nodeName);
        this.nodeLength = Objects.requireNonNull(nodeLength);
        this.nodeReadOnly = nodeReadOnly;
        this.growable = growable;
        this.alignment = Math.max(1, alignment);
    }

    // ---- the hot path ----

    /**
     * Marks {@code [offset, offset+len)} in every recording bitmap. Called after the driver
     * call returned, successful or not, as QEMU's bdrv_co_write_req_finish() does (a failed
     * write may still have changed some of the range, so a bitmap must not claim it clean).
     */
    public void mark(long offset, long len) {
        Marks m = marks;
        if (m.active() && len > 0 && !alreadyDirty(m, offset, len)) {
            markRecording(offset, len);
        }
    }

    /**
     * The lock-free fast path: every recording bitmap has the range dirty already, so marking
     * would change nothing (a guest rewriting what it wrote since the last backup, the common
     * case). Safe without the lock: a bitmap disabled or cleared meanwhile is not written, and a
     * clear that comes after the bits were seen set is a clear after this write's mark, which
     * may erase it (QEMU's order too: the mark follows the write). Unaligned nodes and writes
     * past the end take the locked path.
     */
    private boolean alreadyDirty(Marks m, long offset, long len) {
        if (alignment > 1 || m.recording().length == 0) {
            return false;
        }
        for (DirtyBitmap b : m.recording()) {
            if (!b.allDirty(offset, len)) {
                return false;
            }
        }
        return true;
    }

    private void markRecording(long offset, long len) {
        long start = offset;
        long end = offset > Long.MAX_VALUE - len ? Long.MAX_VALUE : offset + len;
        if (alignment > 1) {
            start -= start % alignment;
            long rem = end % alignment;
            if (rem != 0 && end <= Long.MAX_VALUE - (alignment - rem)) {
                end += alignment - rem;
            }
        }
        boolean beyondEnd = false;
        long stamp = markLock.readLock();
        try {
            Marks m = marks;
            for (DirtyBitmap b : m.recording()) {
                b.mark(start, end - start);
            }
            if (growable) {
                for (DirtyBitmap b : m.all()) {
                    beyondEnd |= end > b.length();
                }
            }
        } finally {
            markLock.unlockRead(stamp);
        }
        if (beyondEnd) {
            // the write went past the end of a growable node: grow every bitmap, then mark the
            // part that did not fit (marking twice is harmless)
            grow(end);
            stamp = markLock.readLock();
            try {
                for (DirtyBitmap b : marks.recording()) {
                    b.mark(start, end - start);
                }
            } finally {
                markLock.unlockRead(stamp);
            }
        }
    }

    /**
     * The node was resized (block_resize): every bitmap takes the new length, bits past it are
     * dropped and grown space is clean (block.c bdrv_dirty_bitmap_truncate).
     */
    public synchronized void truncate(long newNodeLength) {
        long newLength = roundUpToSector(newNodeLength);
        long stamp = markLock.writeLock();
        try {
            for (BlockDirtyBitmap b : list) {
                b.bits().resize(newLength);
            }
        } finally {
            markLock.unlockWrite(stamp);
        }
    }

    private synchronized void grow(long end) {
        long newLength = roundUpToSector(end);
        long stamp = markLock.writeLock();
        try {
            for (BlockDirtyBitmap b : list) {
                if (b.size() < newLength) {
                    b.bits().resize(newLength);
                }
            }
        } finally {
            markLock.unlockWrite(stamp);
        }
    }

    // ---- queries ----

    /**
     * The bitmaps, newest first (query-named-block-nodes' order). Lock-free: a command working
     * on two nodes (a merge) never holds one node's monitor while waiting for another's.
     */
    public List<BlockDirtyBitmap> list() {
        return published;
    }

    public boolean isEmpty() {
        return published.isEmpty();
    }

    /** The named bitmap (QEMU's bdrv_find_dirty_bitmap). Lock-free, as {@link #list()}. */
    public Optional<BlockDirtyBitmap> find(String name) {
        for (BlockDirtyBitmap b : published) {
            if (name.equals(b.name())) {
                return Optional.of(b);
            }
        }
        return Optional.empty();
    }

    /** The persistent-bitmap store of the node's image, if its format has one. */
    public synchronized Optional<PersistentBitmapStore> store() {
        return Optional.ofNullable(store);
    }

    // ---- QMP-visible changes ----

    /**
     * block-dirty-bitmap-add after its node lookup and granularity check, in QEMU's order
     * (qmp_block_dirty_bitmap_add, bdrv_create_dirty_bitmap): persistence checks, name taken,
     * name too long. {@code shownName} is the node's name in QEMU's messages
     * (bdrv_get_device_or_node_name: the device's name when the node is a device's root).
     * <p>
     * Refused although QEMU 7.2 accepts it: {@code persistent} on a read-only node (QEMU
     * accepts it and loses the bitmap at close).
     */
    public synchronized BlockDirtyBitmap create(String name, long granularity, boolean disabled, boolean persistent,
                                                String shownName) throws BitmapException {
        Objects.requireNonNull(name);
        if (persistent) {
            checkCanStore(name, granularity, shownName);
        }
        if (find(name).isPresent()) {
            throw new BitmapException("Bitmap already exists: " + name);
        }
        if (name.getBytes(StandardCharsets.UTF_8).length > MAX_NAME_BYTES) {
            throw new BitmapException("Bitmap name too long: " + name);
        }
        if (persistent && (nodeReadOnly || store.readOnly())) {
            throw new BitmapException("Can't make bitmap '" + name + "' persistent in '" + shownName
                    + "': the image is opened read-only, so the bitmap could never be stored");
        }
        BlockDirtyBitmap b = new BlockDirtyBitmap(this, name, newBits(granularity, name), disabled, persistent,
                false, false);
        changeRecording(() -> list.addFirst(b));
        if (persistent) {
            syncRecord();
        }
        return b;
    }

    /** bdrv_can_store_new_dirty_bitmap(): the store must exist and accept one more. */
    private void checkCanStore(String name, long granularity, String shownName) throws BitmapException {
        if (store == null) {
            throw new BitmapException("Can't store persistent bitmaps to " + shownName + ": Operation not supported");
        }
        List<String> already = new ArrayList<>();
        for (BlockDirtyBitmap b : list) {
            if (b.persistent() && b.name() != null) {
                already.add(b.name());
            }
        }
        try {
            store.checkCanStore(name, granularity, already);
        } catch (PersistentBitmapStore.BitmapStoreException e) {
            // a name clash with an entry in the image is QEMU's plain "Bitmap already exists"
            throw new BitmapException(!e.prefixed() ? e.getMessage()
                    : "Can't make bitmap '" + name + "' persistent in '" + shownName + "': " + e.getMessage(), e);
        }
    }

    /**
     * An anonymous bitmap over the node (a job's copy bitmap, as block-copy makes on the
     * source): listed without a name, never persistent.
     */
    public synchronized BlockDirtyBitmap createAnonymous(long granularity, boolean enabled) throws BitmapException {
        BlockDirtyBitmap b = new BlockDirtyBitmap(this, null, newBits(granularity, null), !enabled, false, false,
                false);
        changeRecording(() -> list.addFirst(b));
        return b;
    }

    /**
     * Records every later write that reaches this node in {@code bits}, a job's own bitmap of the
     * job's exact length (mirror's: QEMU's mirror job bitmap): an anonymous enabled bitmap that
     * the job {@link #release releases} at its end. Whoever writes the node (the device through
     * the job's filter, an export added later on the node's name, another parent) is recorded,
     * so the job cannot miss a write.
     */
    public synchronized BlockDirtyBitmap adopt(DirtyBitmap bits) {
        BlockDirtyBitmap b = new BlockDirtyBitmap(this, null, bits, false, false, false, false);
        changeRecording(() -> list.addFirst(b));
        return b;
    }

    private DirtyBitmap newBits(long granularity, String name) throws BitmapException {
        long length;
        try {
            length = roundUpToSector(nodeLength.get());
        } catch (IOException e) {
            // bdrv_create_dirty_bitmap: "could not get length of device"
            throw new BitmapException("could not get length of device: " + e.getMessage(), e);
        }
        return newBits(length, granularity, name);
    }

    private static DirtyBitmap newBits(long length, long granularity, String name) throws BitmapException {
        try {
            return new DirtyBitmap(length, granularity);
        } catch (IllegalArgumentException e) {
            throw new BitmapException("Cannot create dirty bitmap" + (name == null ? "" : " '" + name + "'") + ": "
                    + e.getMessage(), e);
        } catch (OutOfMemoryError e) {
            // one array allocation failed as a whole; nothing else is left half-made
            throw new BitmapException("Cannot create dirty bitmap" + (name == null ? "" : " '" + name + "'")
                    + ": not enough memory for " + ((length / granularity + 7) / 8) + " bytes of bits", e);
        }
    }

    /**
     * block-dirty-bitmap-remove: refused for a busy or read-only bitmap (an inconsistent one may
     * go: that is the way out); a persistent bitmap leaves the image first (at once, as QEMU's
     * bdrv_remove_persistent_dirty_bitmap), then the node. On a store failure the bitmap stays.
     */
    public synchronized void remove(BlockDirtyBitmap b) throws BitmapException {
        checkOwned(b);
        b.check(BlockDirtyBitmap.Check.REMOVE);
        if (b.persistent() && store != null && b.name() != null) {
            try {
                store.remove(b.name());
            } catch (IOException e) {
                throw new BitmapException("Failed to remove bitmap '" + b.name() + "' from '" + nodeName + "': "
                        + e.getMessage(), e);
            }
        }
        release(b);
    }

    /**
     * Drops a bitmap from the node without touching the image (bdrv_release_dirty_bitmap): a
     * job's anonymous bitmap at its end. It must not be frozen or busy.
     */
    public synchronized void release(BlockDirtyBitmap b) {
        checkOwned(b);
        if (b.frozen() || b.busy()) {
            throw new IllegalStateException("release of a frozen or busy bitmap: " + b);
        }
        changeRecording(() -> list.remove(b));
    }

    /**
     * block-dirty-bitmap-enable / -disable: refused for a busy or inconsistent bitmap; a
     * read-only one may change (only its in-memory state changes). Enabling an enabled bitmap
     * is a no-op.
     */
    public synchronized void setEnabled(BlockDirtyBitmap b, boolean enabled) throws BitmapException {
        checkOwned(b);
        b.check(BlockDirtyBitmap.Check.ALLOW_RO);
        changeRecording(() -> b.setDisabled(!enabled));
        if (b.persistent() && enabled) {
            syncRecord();
        }
    }

    /** block-dirty-bitmap-clear: every bit cleared; refused for busy, read-only, inconsistent. */
    public synchronized void clear(BlockDirtyBitmap b) throws BitmapException {
        checkOwned(b);
        b.check(BlockDirtyBitmap.Check.DEFAULT);
        b.bits().clearAll();
    }

    /**
     * block-dirty-bitmap-merge: ORs {@code sources} (of this node or others) into
     * {@code target} of this node. For each source in turn, as QEMU's
     * bdrv_merge_dirty_bitmap(): the target must pass {@link BlockDirtyBitmap.Check#DEFAULT},
     * the source {@link BlockDirtyBitmap.Check#ALLOW_RO}, and both must cover the same size.
     * Everything is checked before anything is merged, under this node's monitor (a job cannot
     * freeze the target in between), so a refusal leaves the target as it was.
     */
    public synchronized void merge(BlockDirtyBitmap target, List<BlockDirtyBitmap> sources) throws BitmapException {
        checkOwned(target);
        for (BlockDirtyBitmap s : sources) {
            checkMerge(target, s);
        }
        for (BlockDirtyBitmap s : sources) {
            target.bits().or(s.bits());
        }
        if (target.persistent()) {
            syncRecord();
        }
    }

    /** One source's checks of {@link #merge}, in QEMU's order. */
    public static void checkMerge(BlockDirtyBitmap target, BlockDirtyBitmap source) throws BitmapException {
        target.check(BlockDirtyBitmap.Check.DEFAULT);
        source.check(BlockDirtyBitmap.Check.ALLOW_RO);
        if (source.size() != target.size()) {
            throw new BitmapException("Bitmaps are of different sizes (destination size is " + target.size()
                    + ", source size is " + source.size() + ") and can't be merged");
        }
    }

    /** Marks a bitmap busy or not without freezing it (an NBD export of the bitmap). */
    public synchronized void setBusy(BlockDirtyBitmap b, boolean busy) {
        checkOwned(b);
        b.setBusy(busy);
    }

    // ---- the job API (block/dirty-bitmap.c successor functions) ----

    /**
     * Freezes {@code b} for a job (bdrv_dirty_bitmap_create_successor): its bits stop changing,
     * it becomes busy, and a new anonymous successor, enabled exactly when {@code b} was, takes
     * over recording (so {@code b} still shows {@code recording: true}). The successor is
     * listed first. End the freeze with {@link #abdicate} or {@link #reclaim}.
     *
     * @throws BitmapException with QEMU's text when {@code b} is busy or already frozen
     */
    public synchronized BlockDirtyBitmap freeze(BlockDirtyBitmap b) throws BitmapException {
        checkOwned(b);
        if (b.busy()) {
            throw new BitmapException("Cannot create a successor for a bitmap that is in-use by an operation");
        }
        if (b.frozen()) {
            throw new BitmapException("Cannot create a successor for a bitmap that already has one");
        }
        BlockDirtyBitmap successor = new BlockDirtyBitmap(this, null, newBits(b.size(), b.granularity(), null),
                !b.enabled(), false, false, false);
        changeRecording(() -> {
            list.addFirst(successor);
            b.setDisabled(true);
            b.setSuccessor(successor);
            b.setBusy(true);
        });
        return successor;
    }

    /**
     * Ends a freeze keeping only what was written since it began (bdrv_dirty_bitmap_abdicate):
     * the successor takes the name and the persistence, the frozen bitmap goes. A job that
     * succeeded with bitmap-mode on-success uses it.
     *
     * @return the successor, now the named bitmap
     */
    public synchronized BlockDirtyBitmap abdicate(BlockDirtyBitmap b) throws BitmapException {
        checkOwned(b);
        BlockDirtyBitmap successor = b.successor();
        if (successor == null) {
            throw new BitmapException("Cannot relinquish control if there's no successor present");
        }
        changeRecording(() -> {
            successor.setName(b.name());
            b.setName(null);
            successor.setPersistent(b.persistent());
            b.setPersistent(false);
            b.setSuccessor(null);
            b.setBusy(false);
            list.remove(b);
        });
        if (successor.persistent()) {
            syncRecord();
        }
        return successor;
    }

    /**
     * Ends a freeze keeping everything (bdrv_reclaim_dirty_bitmap): the successor's bits are
     * merged into {@code b}, which records again exactly when the successor did, and is no
     * longer busy; the successor goes. A failed or cancelled job uses it.
     */
    public synchronized BlockDirtyBitmap reclaim(BlockDirtyBitmap b) throws BitmapException {
        checkOwned(b);
        BlockDirtyBitmap successor = b.successor();
        if (successor == null) {
            throw new BitmapException("Cannot reclaim a successor when none is present");
        }
        changeRecording(() -> {
            b.bits().or(successor.bits());
            b.setDisabled(!successor.enabled());
            b.setBusy(false);
            b.setSuccessor(null);
            list.remove(successor);
        });
        if (b.persistent()) {
            syncRecord(); // the successor's bits came back
        }
        return b;
    }

    // ---- persistence ----

    /**
     * Takes the node's store and loads its bitmaps (once, when the node is created): each one
     * persistent, read-only when the store is, an inconsistent one disabled and empty. They are
     * prepended in directory order, so the list shows them in reverse directory order, as QEMU
     * does.
     */
    public synchronized void attachStore(PersistentBitmapStore s) throws IOException {
        if (store != null) {
            throw new IllegalStateException("store already attached to " + nodeName);
        }
        long length = roundUpToSector(nodeLength.get());
        List<BlockDirtyBitmap> loaded = new ArrayList<>();
        for (StoredBitmap sb : s.loaded()) {
            DirtyBitmap bits;
            try {
                bits = sb.inconsistent() ? newBits(length, sb.granularity(), sb.name())
                        : DirtyBitmap.of(length, sb.granularity(), sb.bits());
            } catch (BitmapException | IllegalArgumentException e) {
                throw new IOException("Cannot load bitmap '" + sb.name() + "' of node '" + nodeName + "': "
                        + e.getMessage(), e);
            }
            loaded.add(new BlockDirtyBitmap(this, sb.name(), bits, sb.inconsistent() || !sb.enabled(), true,
                    s.readOnly(), sb.inconsistent()));
        }
        changeRecording(() -> loaded.forEach(list::addFirst));
        store = s;
        syncRecord(); // arms the crash record of a read-write image
    }

    /**
     * Every consistent persistent bitmap as it would be stored now: a frozen one with its
     * successor's bits too, so that no write is dropped.
     */
    private List<StoredBitmap> persistentNow() {
        List<StoredBitmap> out = new ArrayList<>();
        for (BlockDirtyBitmap b : list) {
            if (b.name() == null || !b.persistent() || b.inconsistent() || b.readonly()) {
                continue;
            }
            DirtyBitmap bits = b.bits();
            BlockDirtyBitmap s = b.successor();
            if (s != null) {
                bits = bits.copy();
                bits.or(s.bits());
            }
            out.add(new StoredBitmap(b.name(), b.granularity(), bits.length(), b.recording(), false, bits.toBitSet()));
        }
        return out;
    }

    /**
     * Brings the store's crash record up to date (PersistentBitmapStore#sync: beyond QEMU, the
     * persistent bitmaps survive a crash): after the open, and after every change that sets bits
     * other than by recording a request or starts a persistent bitmap recording (add, enable,
     * merge, a job's bitmap given back). A failure only costs the record: after a crash the
     * bitmaps are then inconsistent, as QEMU's always are; it is logged.
     */
    private void syncRecord() {
        if (store == null || store.readOnly() || stored) {
            return;
        }
        try {
            store.sync(persistentNow());
        } catch (IOException | RuntimeException e) {
            System.err.println("jblockd: the crash record of the persistent bitmaps of node '" + nodeName
                    + "' could not be updated (after a crash they will be inconsistent): " + e.getMessage());
        }
    }

    /**
     * The clean close (QEMU's qcow2_inactivate -> qcow2_store_persistent_dirty_bitmaps): stores
     * every consistent persistent bitmap in the list's order, each with {@code auto} = recording.
     * A bitmap still frozen is stored as its bits plus its successor's (no write is dropped). A
     * failure is reported on stderr as QEMU reports it, and the close goes on. At most once.
     */
    public synchronized void storeOnClose() {
        if (store == null || store.readOnly() || stored) {
            return;
        }
        stored = true;
        try {
            store.store(persistentNow());
        } catch (IOException | RuntimeException e) {
            System.err.println("jblockd: Lost persistent bitmaps during inactivation of node '" + nodeName + "': "
                    + e.getMessage());
        }
    }

    /**
     * The first half of a reopen of the node (QEMU's qcow2_reopen_bitmaps_ro and the inactivation
     * a reopen amounts to for jblockd, which closes the old driver): stores every consistent
     * persistent bitmap, as a clean close does, and keeps them all in memory. The caller has
     * quiesced the node and closes the old driver next. Unlike {@link #storeOnClose} a store
     * failure is the reopen's failure (the image would claim stale bitmaps consistent).
     */
    public synchronized void storeForReopen() throws IOException {
        if (store == null || store.readOnly() || stored) {
            return;
        }
        store.store(persistentNow());
    }

    /**
     * The second half of a reopen: the node now runs on a new driver ({@code s} its store, null
     * for a format without one) and is {@code readOnly}. The bitmaps in memory stay what they
     * are (QEMU keeps its BdrvDirtyBitmaps across a reopen); each persistent one becomes
     * read-only with a read-only store, writable with a writable one whose open has marked it
     * {@code in_use} in the image (qcow2_reopen_bitmaps_rw). A persistent bitmap the new store
     * did not find (it could not be stored) is refused, as QEMU's "unexpected missing bitmap".
     */
    public synchronized void reattachStore(PersistentBitmapStore s, boolean readOnly) throws IOException {
        if (s != null && !s.readOnly()) {
            java.util.Set<String> inImage = new java.util.HashSet<>();
            for (StoredBitmap sb : s.loaded()) {
                inImage.add(sb.name());
            }
            for (BlockDirtyBitmap b : list) {
                if (b.persistent() && b.name() != null && b.readonly() && !inImage.contains(b.name())) {
                    throw new IOException("Cannot reopen bitmap '" + b.name() + "' of node '" + nodeName
                            + "' read-write: it is not in the image");
                }
            }
        }
        nodeReadOnly = readOnly;
        store = s;
        boolean ro = readOnly || s == null || s.readOnly();
        for (BlockDirtyBitmap b : list) {
            if (b.persistent() && b.name() != null) {
                b.setReadonly(ro);
            }
        }
        syncRecord(); // arms the crash record of a store that became writable
    }

    // ---- internals ----

    /** Runs a change of the list or of an enabled flag, then republishes the recording set. */
    private void changeRecording(Runnable change) {
        long stamp = markLock.writeLock();
        try {
            change.run();
            List<DirtyBitmap> r = new ArrayList<>();
            List<DirtyBitmap> all = new ArrayList<>();
            for (BlockDirtyBitmap b : list) {
                all.add(b.bits());
                if (b.enabled()) {
                    r.add(b.bits());
                }
            }
            published = List.copyOf(list);
            marks = all.isEmpty() ? NONE : new Marks(r.toArray(DirtyBitmap[]::new), all.toArray(DirtyBitmap[]::new),
                    !r.isEmpty() || growable);
        } finally {
            markLock.unlockWrite(stamp);
        }
    }

    private void checkOwned(BlockDirtyBitmap b) {
        if (b.owner() != this) {
            throw new IllegalArgumentException("bitmap " + b + " belongs to another node");
        }
    }

    /** bdrv_getlength() is whole sectors: a bitmap of an odd-sized file covers the last sector. */
    static long roundUpToSector(long length) {
        return length > Long.MAX_VALUE - 511 ? length : (length + 511) & ~511L;
    }

    @Override
    public String toString() {
        return "bitmaps of " + nodeName;
    }
}
