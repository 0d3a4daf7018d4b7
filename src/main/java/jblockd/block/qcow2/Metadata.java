package jblockd.block.qcow2;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.locks.ReentrantLock;

import jblockd.block.Errno;
import jblockd.block.IoError;

/**
 * The metadata of one open qcow2 image: header, L1 table, L2 table cache, refcounts and the
 * cluster allocator (QEMU's block/qcow2-refcount.c and the table half of qcow2-cluster.c).
 * <p>
 * Every change happens under {@link #lock}; L1 and cached L2 entries may be read without it.
 * Like QEMU's metadata caches, L2 updates and refcount increments stay in memory (dirty) until
 * {@link #writeBack()}: on flush, under cache pressure, and in the driver's background
 * write-back shortly after a change. Freeing a replaced cluster waits for the write-back too.
 * <p>
 * Crash consistency: the file may reorder and drop any writes not yet covered by a flush, so
 * where one write must not become durable before another, a flush of the file goes between
 * them ({@link #flushFile()}), as QEMU's cache dependencies do (qcow2_cache_set_dependency,
 * qcow2_cache_depends_on_flush, the flushes in l2_allocate and alloc_refcount_block):
 * <ul>
 * <li>a new cluster's refcount and its data (guest data, the copy-on-write of old data) before
 * an L2 entry pointing at it: the write-back flushes between refcount blocks and L2 tables
 * when an L2 entry was linked to a fresh cluster since the last flush;
 * <li>an L2 change before the refcount decrement of the cluster it no longer points at (else
 * the cluster could be reused while the old entry on disk still points at it): frees run
 * after the L2 write-back and a flush;
 * <li>a new L2 table or refcount block (content and refcount) before the L1 or refcount table
 * entry that points at it; a new refcount table before the header, the header before the old
 * table is freed.
 * </ul>
 * Nothing else is ordered: a lost refcount decrement or a lost pointer to a new table only
 * leaks clusters. Images never have their dirty bit set.
 */
final class Metadata {
    static final long OFFSET_MASK = 0x00fffffffffffe00L;
    static final long COPIED = 1L << 63;
    static final long COMPRESSED = 1L << 62;
    static final long ZERO = 1L;

    final ReentrantLock lock = new ReentrantLock();
    final HostFile file;
    final Qcow2Header header;
    final int clusterBits;
    final int clusterSize;
    final int l2Entries;
    /** Replaced whole when the image grows past it ({@link #growL1}); guarded by lock then. */
    volatile AtomicLongArray l1;
    /** Set by a writable driver: {@link #corruption(String)} then also sets the header's corrupt bit. */
    volatile boolean markCorruptOnDisk;
    private volatile String corruption;

    private final L2Cache l2Cache;
    private final int refcountBits;
    private final long refcountMax;
    private final int refcountsPerBlock;
    private long[] refTable;
    private final LinkedHashMap<Long, byte[]> refBlocks;
    /** Refcount blocks used since the last {@link #cleanUnusedCaches}; guarded by {@link #lock}. */
    private final java.util.Set<Long> refBlocksUsed = new java.util.HashSet<>();
    private final int maxBlocks;
    /** Refcount blocks changed in memory only: offset to the dirty byte range {from, to}. */
    private final LinkedHashMap<Long, int[]> dirtyBlocks = new LinkedHashMap<>();
    /** L2 tables changed in memory only. */
    private final java.util.LinkedHashSet<L2Cache.Table> dirtyTables = new java.util.LinkedHashSet<>();
    /**
     * L2 entries were linked to fresh clusters since the last flush: the clusters' refcounts and
     * data must be durable before those tables are written (QEMU's depends_on_flush).
     */
    private boolean tablesAwaitFlush;
    /** L2 tables were written since the last flush: a refcount decrement must wait for one. */
    private boolean tablesUnflushed;
    /** Told (under the lock) when metadata becomes dirty, so the driver can schedule a write-back. */
    Runnable onDirty = () -> { };
    /** First cluster that may be free (QEMU's free_cluster_index). */
    private long freeHint;
    /** One past the highest cluster index in use or handed out. */
    private long allocEnd;
    /**
     * Cluster ranges {start, end} handed out whose refcounts are still being raised: a nested
     * allocation (a refcount block needed on the way) must not take them even though their
     * refcount still reads 0, and freeing (the old refcount table) may lower the hint below them.
     */
    private final java.util.ArrayDeque<long[]> reserved = new java.util.ArrayDeque<>();
    /** Replaced L2 entries whose clusters are freed at the next write-back (see {@link #releaseEntries}). */
    private final java.util.ArrayList<Long> pendingFrees = new java.util.ArrayList<>();
    /** For each pending free: pass a discard of the freed cluster down to the file. */
    private final java.util.ArrayList<Boolean> pendingDiscards = new java.util.ArrayList<>();

    /** About 8 MiB of L2 tables (64 GiB of guest with 64 KiB clusters), 4 MiB of refcount blocks. */
    static final long DEFAULT_CACHE_BYTES = 8L << 20;

    Metadata(HostFile file, Qcow2Header header) throws IOException {
        this(file, header, DEFAULT_CACHE_BYTES);
    }

    /** {@code cacheBytes}: the L2 cache budget; refcount blocks get half of it. At least 4 of each. */
    Metadata(HostFile file, Qcow2Header header, long cacheBytes) throws IOException {
        this(file, header, cacheBytes, cacheBytes / 2);
    }

    /** The L2 table cache and the refcount block cache budgets in bytes; at least 4 of each. */
    Metadata(HostFile file, Qcow2Header header, long l2CacheBytes, long refcountCacheBytes) throws IOException {
        this.file = file;
        this.header = header;
        this.clusterBits = header.clusterBits;
        this.clusterSize = 1 << clusterBits;
        this.l2Entries = clusterSize / 8;
        this.refcountBits = 1 << header.refcountOrder;
        this.refcountMax = refcountBits == 64 ? Long.MAX_VALUE : (1L << refcountBits) - 1;
        this.refcountsPerBlock = (int) ((long) clusterSize * 8 / refcountBits);
        this.l2Cache = new L2Cache((int) Math.min(Integer.MAX_VALUE, Math.max(4, l2CacheBytes / clusterSize)));
        int maxBlocks = (int) Math.min(Integer.MAX_VALUE, Math.max(4, refcountCacheBytes / clusterSize));
        this.maxBlocks = maxBlocks;
        this.refBlocks = new LinkedHashMap<>(64, 0.75f, true) {
            @Override
            protected boolean removeEldestEntry(Map.Entry<Long, byte[]> eldest) {
                return size() > maxBlocks && !dirtyBlocks.containsKey(eldest.getKey());
            }
        };
        long fileLength = file.length();
        this.allocEnd = (fileLength + clusterSize - 1) >>> clusterBits;

        long[] l1Values = readLongs(header.l1Offset, header.l1Size);
        this.l1 = new AtomicLongArray(l1Values);
        this.refTable = readLongs(header.refcountTableOffset,
                (int) ((long) header.refcountTableClusters * clusterSize / 8));
    }

    private long[] readLongs(long offset, int count) throws IOException {
        long[] out = new long[count];
        if (count == 0) {
            return out;
        }
        ByteBuffer b = ByteBuffer.allocate(count * 8);
        file.read(offset, b);
        b.flip();
        b.asLongBuffer().get(out);
        return out;
    }

    // ---------------------------------------------------------------- L1 / L2 lookups

    /** The L2 entry of guest cluster {@code g}, 0 when no L2 table exists. Lock-free on a hit. */
    long l2Entry(long g) throws IOException {
        int l1Index = (int) (g / l2Entries);
        if (l1Index >= l1.length()) {
            return 0;
        }
        long l2Offset = l1.get(l1Index) & OFFSET_MASK;
        if (l2Offset == 0) {
            return 0;
        }
        return l2Table(l2Offset).entries.get((int) (g % l2Entries));
    }

    /** True when the L1 entry covering guest cluster {@code g} points at no L2 table. */
    boolean l2Missing(long g) {
        int l1Index = (int) (g / l2Entries);
        return l1Index >= l1.length() || (l1.get(l1Index) & OFFSET_MASK) == 0;
    }

    L2Cache.Table l2Table(long l2Offset) throws IOException {
        L2Cache.Table t = l2Cache.get(l2Offset);
        if (t != null) {
            return t;
        }
        lock.lock();
        try {
            t = l2Cache.get(l2Offset);
            if (t == null) {
                if ((l2Offset & (clusterSize - 1)) != 0 || l2Offset < clusterSize) {
                    throw corruption("L2 table offset 0x" + Long.toHexString(l2Offset) + " is invalid");
                }
                // Past EOF the host file reads as zeroes and a metadata cluster reads as someone
                // else's entries: either would hand the guest zeroes or garbage for data it
                // wrote (and a write would then allocate over it). EIO instead.
                if (l2Offset + clusterSize > file.length()) {
                    throw corruption("L2 table offset 0x" + Long.toHexString(l2Offset)
                            + " is past the end of the image file");
                }
                if (overlapsMetadata(l2Offset)) {
                    throw corruption("L2 table offset 0x" + Long.toHexString(l2Offset)
                            + " overlaps the L1 table or the refcount structures");
                }
                t = new L2Cache.Table(l2Offset, new AtomicLongArray(readLongs(l2Offset, l2Entries)));
                l2Cache.put(t);
            }
            return t;
        } finally {
            lock.unlock();
        }
    }

    /** True when the cluster at {@code off} overlaps the L1 table or the refcount table. */
    private boolean overlapsTables(long off) {
        long end = off + clusterSize;
        long l1Start = header.l1Offset;
        long l1End = l1Start + (long) header.l1Size * 8;
        long rtStart = header.refcountTableOffset;
        long rtEnd = rtStart + (long) header.refcountTableClusters * clusterSize;
        return (off < l1End && l1Start < end) || (off < rtEnd && rtStart < end);
    }

    /** True when cluster-aligned {@code off} lies in the L1 table, refcount table or a refcount block. */
    private boolean overlapsMetadata(long off) {
        if (overlapsTables(off)) {
            return true;
        }
        for (long rb : refTable) {
            if ((rb & OFFSET_MASK) == off) {
                return true;
            }
        }
        return false;
    }

    /**
     * Records metadata corruption found at runtime and returns the EIO to throw. Like QEMU's
     * qcow2_signal_corruption() (block/qcow2.c), the first one marks a writable image corrupt
     * in its header (so no one opens it read/write again before {@code qemu-img check -r}) and
     * from then on {@link #corruption()} makes the driver refuse every write; unlike QEMU, reads
     * of healthy ranges keep working (QEMU drops the driver and fails all I/O with ENOMEDIUM).
     */
    IoError corruption(String what) {
        lock.lock();
        try {
            if (corruption == null) {
                corruption = what;
                System.err.println("qcow2: Marking image as corrupt: " + what
                        + "; further corruption events will be suppressed");
                if (markCorruptOnDisk) {
                    try {
                        header.incompatible |= Qcow2Header.INCOMPAT_CORRUPT;
                        writeHeader();
                        flushFile();
                    } catch (IOException e) {
                        System.err.println("qcow2: cannot set the corrupt bit: " + e.getMessage());
                    }
                }
            }
        } finally {
            lock.unlock();
        }
        return new IoError(Errno.EIO, "qcow2: corrupt image: " + what);
    }

    /** The first corruption found at runtime, or null. */
    String corruption() {
        return corruption;
    }

    /**
     * The L2 table for guest cluster {@code g}, allocated (zeroed, COPIED in L1) when missing.
     * Caller holds {@link #lock}.
     */
    L2Cache.Table l2TableForWrite(long g) throws IOException {
        int l1Index = (int) (g / l2Entries);
        long e = l1.get(l1Index);
        long off = e & OFFSET_MASK;
        if (off != 0) {
            if ((e & COPIED) == 0) {
                // No internal snapshots (refused at open): a shared L2 table means corruption,
                // unless only the flag is missing.
                if (refcount(off >>> clusterBits) != 1) {
                    throw new IoError(Errno.EIO, "qcow2: corrupt image: L2 table at 0x"
                            + Long.toHexString(off) + " is shared");
                }
                setL1(l1Index, off | COPIED);
            }
            return l2Table(off);
        }
        long newOff = allocClusters(1);
        try {
            file.write(newOff, ByteBuffer.allocate(clusterSize));
            writeBackRefBlocks();
            // The zeroed table and its refcount durable before the L1 entry (QEMU's l2_allocate):
            // else the entry may point at a cluster with stale content or refcount 0.
            flushFile();
            setL1(l1Index, newOff | COPIED);
        } catch (IOException failure) {
            freeQuietly(newOff, 1);
            throw failure;
        }
        L2Cache.Table t = new L2Cache.Table(newOff, new AtomicLongArray(l2Entries));
        l2Cache.put(t);
        return t;
    }

    /**
     * QEMU qcow2_grow_l1_table() with an exact size: a new table of {@code entries} entries in
     * fresh clusters (the old entries, zeroes after), written and flushed; then the header points
     * at it (flushed); then the old table's clusters are freed. A crash leaves either table in
     * the header, each complete. Caller holds the lock; the node is drained (no request runs).
     */
    void growL1(int entries) throws IOException {
        AtomicLongArray old = l1;
        if (entries <= old.length()) {
            return;
        }
        long bytes = (long) entries * 8;
        if (bytes > Qcow2Header.MAX_L1_BYTES) {
            throw new IoError(Errno.EFBIG, "qcow2: L1 table too large");
        }
        int clusters = (int) ((bytes + clusterSize - 1) / clusterSize);
        long off = allocClusters(clusters);
        try {
            ByteBuffer b = ByteBuffer.allocate(clusters * clusterSize);
            for (int i = 0; i < old.length(); i++) {
                b.putLong(i * 8, old.get(i));
            }
            file.write(off, b);
            writeBackRefBlocks();
            flushFile(); // the new table and its refcounts before the header points at it
        } catch (IOException e) {
            freeQuietly(off, clusters);
            throw e;
        }
        long oldOffset = header.l1Offset;
        int oldClusters = (int) (((long) header.l1Size * 8 + clusterSize - 1) / clusterSize);
        ByteBuffer hb = ByteBuffer.allocate(12).putInt(0, entries).putLong(4, off);
        file.write(36, hb); // l1_size, l1_table_offset
        flushFile();
        header.l1Size = entries;
        header.l1Offset = off;
        AtomicLongArray grown = new AtomicLongArray(entries);
        for (int i = 0; i < old.length(); i++) {
            grown.set(i, old.get(i));
        }
        l1 = grown;
        if (oldClusters > 0 && oldOffset != 0) {
            // qcow2_grow_l1_table frees the old table with QCOW2_DISCARD_OTHER
            freeClusters(oldOffset, (long) oldClusters * clusterSize, passDiscardOther);
        }
    }

    /** QEMU's pass-discard-other: clusters freed by metadata changes are discarded in the file. */
    volatile boolean passDiscardOther;

    /** The header's virtual size, made durable (QEMU writes it with bdrv_pwrite_sync). */
    void writeSize(long size) throws IOException {
        file.write(24, ByteBuffer.allocate(8).putLong(0, size));
        flushFile();
        header.size = size;
    }

    private void setL1(int index, long value) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(8).putLong(0, value);
        file.write(header.l1Offset + (long) index * 8, b);
        l1.set(index, value);
    }

    /**
     * Records that entries {@code [from, to)} of a table now point at freshly allocated clusters
     * whose data is written: the table may reach the file only after a flush. Caller holds the lock.
     */
    void markL2Linked(L2Cache.Table t, int from, int to) {
        tablesAwaitFlush = true;
        markL2Dirty(t, from, to);
    }

    /**
     * Records that entries {@code [from, to)} of a table changed without pointing at new
     * clusters (zero flags, unmapping). Caller holds the lock.
     */
    void markL2Dirty(L2Cache.Table t, int from, int to) {
        t.dirtyFrom = Math.min(t.dirtyFrom, from);
        t.dirtyTo = Math.max(t.dirtyTo, to);
        if (dirtyTables.add(t) && dirtyTables.size() == 1 && dirtyBlocks.isEmpty()) {
            onDirty.run();
        }
    }

    /**
     * Writes dirty metadata back when a lot has piled up; called before a request changes
     * anything, so a failure fails the request cleanly. Caller holds the lock.
     */
    void maybeWriteBack() throws IOException {
        // Pending frees count too: until the write-back their clusters cannot be reused, so a
        // long run of discards and writes without a flush would only grow the file.
        if (dirtyTables.size() > l2Cache.maxTables() / 2 || dirtyBlocks.size() > maxBlocks / 2
                || pendingFrees.size() >= l2Entries) {
            writeBack();
        }
    }

    boolean dirty() {
        return !dirtyTables.isEmpty() || !dirtyBlocks.isEmpty() || !pendingFrees.isEmpty();
    }

    /** Flushes the file: every write before it is durable, which is what the dependencies wait for. */
    private void flushFile() throws IOException {
        file.flush();
        tablesAwaitFlush = false;
        tablesUnflushed = false;
    }

    /**
     * Writes dirty metadata back in dependency order (see the class comment): refcount blocks
     * (increments only), a flush if a table links fresh clusters, the L2 tables, then the
     * pending frees after another flush. What fails stays dirty (or pending) for the next try.
     * Caller holds the lock.
     */
    void writeBack() throws IOException {
        writeBackRefBlocks();
        if (!dirtyTables.isEmpty() && tablesAwaitFlush) {
            flushFile();
        }
        writeBackTables();
        freePending();
    }

    private void writeBackTables() throws IOException {
        java.util.Iterator<L2Cache.Table> it = dirtyTables.iterator();
        while (it.hasNext()) {
            L2Cache.Table t = it.next();
            int from = t.dirtyFrom;
            int to = t.dirtyTo;
            ByteBuffer b = ByteBuffer.allocate((to - from) * 8);
            for (int i = from; i < to; i++) {
                b.putLong(t.entries.get(i));
            }
            b.flip();
            tablesUnflushed = true;
            file.write(t.offset + (long) from * 8, b);
            t.dirtyFrom = Integer.MAX_VALUE;
            t.dirtyTo = -1;
            it.remove();
        }
        while (l2Cache.size() > l2Cache.maxTables()) {
            int before = l2Cache.size();
            l2Cache.trim();
            if (l2Cache.size() == before) {
                break;
            }
        }
    }

    private void writeBackRefBlocks() throws IOException {
        java.util.Iterator<Map.Entry<Long, int[]>> it = dirtyBlocks.entrySet().iterator();
        while (it.hasNext()) {
            Map.Entry<Long, int[]> e = it.next();
            byte[] blk = refBlocks.get(e.getKey());
            int[] r = e.getValue();
            file.write(e.getKey() + r[0], ByteBuffer.wrap(blk, r[0], r[1] - r[0]).slice());
            it.remove();
        }
        if (refBlocks.size() > maxBlocks) {
            java.util.Iterator<Long> keys = refBlocks.keySet().iterator();
            while (refBlocks.size() > maxBlocks && keys.hasNext()) {
                keys.next();
                keys.remove();
            }
        }
    }

    // ---------------------------------------------------------------- refcounts

    /** Refcount of host cluster {@code c}; 0 beyond the refcount table. Caller holds the lock. */
    long refcount(long c) throws IOException {
        long tIdx = c / refcountsPerBlock;
        if (tIdx >= refTable.length) {
            return 0;
        }
        long blockOff = refTable[(int) tIdx] & OFFSET_MASK;
        if (blockOff == 0) {
            return 0;
        }
        return get(block(blockOff), (int) (c % refcountsPerBlock));
    }

    /**
     * cache-clean-interval (qcow2_cache_clean_unused): drops the clean L2 tables and refcount
     * blocks nobody used since the previous call, so an idle image gives its cache memory back.
     */
    void cleanUnusedCaches() {
        lock.lock();
        try {
            l2Cache.dropUnused();
            refBlocks.keySet().removeIf(off -> !refBlocksUsed.contains(off) && !dirtyBlocks.containsKey(off));
            refBlocksUsed.clear();
        } finally {
            lock.unlock();
        }
    }

    /** Cached tables and blocks now (tests). */
    int cachedTables() {
        lock.lock();
        try {
            return l2Cache.size() + refBlocks.size();
        } finally {
            lock.unlock();
        }
    }

    private byte[] block(long blockOff) throws IOException {
        refBlocksUsed.add(blockOff);
        byte[] b = refBlocks.get(blockOff);
        if (b == null) {
            if ((blockOff & (clusterSize - 1)) != 0 || blockOff < clusterSize) {
                throw corruption("refcount block offset 0x" + Long.toHexString(blockOff) + " is invalid");
            }
            // A refcount block past EOF reads as all zeroes and one on the L1 or refcount table
            // as nonsense: allocation would then hand out clusters in use (the header, L1, data)
            // and the refcount update would overwrite that table. EIO instead.
            if (blockOff + clusterSize > file.length() || overlapsTables(blockOff)) {
                throw corruption("refcount block offset 0x" + Long.toHexString(blockOff)
                        + " is past the end of the image file or overlaps the L1/refcount table");
            }
            b = new byte[clusterSize];
            file.read(blockOff, ByteBuffer.wrap(b));
            refBlocks.put(blockOff, b);
        }
        return b;
    }

    /** Refcount array accessors, QEMU's get_refcount_ro0..6 (sub-byte widths: low bits first). */
    private long get(byte[] b, int i) {
        switch (refcountBits) {
            case 1, 2, 4 -> {
                int perByte = 8 / refcountBits;
                int shift = (i % perByte) * refcountBits;
                return (b[i / perByte] >>> shift) & ((1 << refcountBits) - 1);
            }
            case 8 -> {
                return b[i] & 0xff;
            }
            case 16 -> {
                return ((b[2 * i] & 0xff) << 8) | (b[2 * i + 1] & 0xff);
            }
            case 32 -> {
                return ByteBuffer.wrap(b).getInt(4 * i) & 0xffffffffL;
            }
            default -> {
                return ByteBuffer.wrap(b).getLong(8 * i);
            }
        }
    }

    private void set(byte[] b, int i, long v) {
        switch (refcountBits) {
            case 1, 2, 4 -> {
                int perByte = 8 / refcountBits;
                int shift = (i % perByte) * refcountBits;
                int mask = ((1 << refcountBits) - 1) << shift;
                b[i / perByte] = (byte) ((b[i / perByte] & ~mask) | ((int) v << shift));
            }
            case 8 -> b[i] = (byte) v;
            case 16 -> {
                b[2 * i] = (byte) (v >>> 8);
                b[2 * i + 1] = (byte) v;
            }
            case 32 -> ByteBuffer.wrap(b).putInt(4 * i, (int) v);
            default -> ByteBuffer.wrap(b).putLong(8 * i, v);
        }
    }

    /** Byte range {from, to} of a block that holds entries {@code [first, last]}. */
    private int[] byteRange(int first, int last) {
        int from = (int) ((long) first * refcountBits / 8);
        int to = (int) (((long) last + 1) * refcountBits + 7) / 8;
        return new int[] {from, to};
    }

    /**
     * Adds {@code delta} to the refcounts of clusters {@code [first, first + count)}, allocating
     * refcount blocks (and growing the table) as increments need them. Caller holds the lock.
     */
    void addRefcount(long first, long count, int delta) throws IOException {
        long c = first;
        long end = first + count;
        try {
            while (c < end) {
                long tIdx = c / refcountsPerBlock;
                long blockOff = delta > 0 ? ensureBlock(tIdx) : existingBlock(tIdx);
                if (blockOff == 0) {
                    throw new IoError(Errno.EIO, "qcow2: corrupt image: freeing cluster " + c
                            + " which has no refcount block");
                }
                byte[] blk = block(blockOff);
                long upto = Math.min(end, (tIdx + 1) * refcountsPerBlock);
                int i0 = (int) (c % refcountsPerBlock);
                int i1 = (int) ((upto - 1) % refcountsPerBlock);
                for (int i = i0; i <= i1; i++) {
                    long v = get(blk, i) + delta;
                    if (v < 0 || v > refcountMax) {
                        throw new IoError(Errno.EIO, "qcow2: corrupt image: refcount of cluster "
                                + (tIdx * refcountsPerBlock + i) + " out of range");
                    }
                }
                int[] r = byteRange(i0, i1);
                byte[] before = java.util.Arrays.copyOfRange(blk, r[0], r[1]);
                long hint = freeHint;
                for (int i = i0; i <= i1; i++) {
                    long v = get(blk, i) + delta;
                    set(blk, i, v);
                    if (v == 0 && tIdx * refcountsPerBlock + i < freeHint) {
                        freeHint = tIdx * refcountsPerBlock + i;
                    }
                }
                if (delta > 0) {
                    int[] d = dirtyBlocks.get(blockOff);
                    if (d == null) {
                        dirtyBlocks.put(blockOff, new int[] {r[0], r[1]});
                        if (dirtyBlocks.size() == 1 && dirtyTables.isEmpty()) {
                            onDirty.run();
                        }
                    } else {
                        d[0] = Math.min(d[0], r[0]);
                        d[1] = Math.max(d[1], r[1]);
                    }
                } else {
                    try {
                        file.write(blockOff + r[0], ByteBuffer.wrap(blk, r[0], r[1] - r[0]).slice());
                    } catch (IOException | RuntimeException e) {
                        // Keep memory equal to the file.
                        System.arraycopy(before, 0, blk, r[0], before.length);
                        freeHint = hint;
                        throw e;
                    }
                }
                c = upto;
            }
        } catch (IOException | RuntimeException e) {
            // Undo (best effort) the chunks this call already wrote.
            if (c > first) {
                try {
                    addRefcount(first, c - first, -delta);
                } catch (IOException | RuntimeException ignored) {
                    // the first error is the one to report
                }
            }
            throw e;
        }
    }

    private long existingBlock(long tIdx) {
        if (tIdx >= refTable.length) {
            return 0;
        }
        return refTable[(int) tIdx] & OFFSET_MASK;
    }

    /**
     * The refcount block for table index {@code tIdx}, allocated as QEMU's
     * alloc_refcount_block() does: the new block takes the first free cluster; if it falls in
     * its own range it describes itself, otherwise its refcount goes to the block covering it
     * (recursively, which may create that block first).
     */
    private long ensureBlock(long tIdx) throws IOException {
        long existing = existingBlock(tIdx);
        if (existing != 0) {
            return existing;
        }
        if (tIdx >= refTable.length) {
            growTable(tIdx);
            return existingBlock(tIdx);
        }
        long nb = findFree(1);
        freeHint = nb + 1;
        allocEnd = Math.max(allocEnd, nb + 1);
        byte[] blk = new byte[clusterSize];
        if (nb / refcountsPerBlock == tIdx) {
            set(blk, (int) (nb % refcountsPerBlock), 1);
        } else {
            reserved.push(new long[] {nb, nb + 1});
            try {
                addRefcount(nb, 1, +1);
            } finally {
                reserved.pop();
            }
            if (existingBlock(tIdx) != 0) {
                // The recursion created this very block (the new cluster's own block was it).
                addRefcount(nb, 1, -1);
                return existingBlock(tIdx);
            }
        }
        long off = nb << clusterBits;
        try {
            writeBackRefBlocks();
            file.write(off, ByteBuffer.wrap(blk));
            // The block (and the refcount of its cluster, if another block holds it) durable
            // before the table points at it (QEMU's alloc_refcount_block).
            flushFile();
            setRefTableEntry((int) tIdx, off);
        } catch (IOException | RuntimeException e) {
            if (nb / refcountsPerBlock != tIdx) {
                freeQuietly(off, 1);
            }
            throw e;
        }
        refBlocks.put(off, blk);
        return off;
    }

    private void setRefTableEntry(int idx, long off) throws IOException {
        file.write(header.refcountTableOffset + (long) idx * 8, ByteBuffer.allocate(8).putLong(0, off));
        refTable[idx] = off;
    }

    /**
     * Grows the refcount table so it has an entry {@code neededIdx}: new blocks and the new table
     * go to the end of the image, sized so that they describe themselves (QEMU's
     * qcow2_refcount_area()); the header switches to the new table, then the old one is freed.
     */
    private void growTable(long neededIdx) throws IOException {
        writeBackRefBlocks();
        long start = allocEnd;
        long blocks = 0;
        long tableClusters = 0;
        long neededBlocks;
        List<Long> newIdx = new ArrayList<>();
        while (true) {
            long total = start + blocks + tableClusters;
            neededBlocks = Math.max(neededIdx + 1, (total + refcountsPerBlock - 1) / refcountsPerBlock);
            long first = Math.min(neededIdx, start / refcountsPerBlock);
            newIdx.clear();
            for (long i = first; i < neededBlocks; i++) {
                if (existingBlock(i) == 0) {
                    newIdx.add(i);
                }
            }
            // Room for half as many entries again, so the table does not grow on every block.
            long entries = neededBlocks + neededBlocks / 2 + 1;
            long t = (entries * 8 + clusterSize - 1) / clusterSize;
            if (newIdx.size() == blocks && t == tableClusters) {
                break;
            }
            blocks = newIdx.size();
            tableClusters = t;
        }
        if (tableClusters * clusterSize > Qcow2Header.MAX_REFTABLE_BYTES) {
            throw new IoError(Errno.EFBIG, "qcow2: reference count table too large");
        }
        long[] table = new long[(int) (tableClusters * clusterSize / 8)];
        System.arraycopy(refTable, 0, table, 0, refTable.length);
        for (int k = 0; k < newIdx.size(); k++) {
            long off = (start + k) << clusterBits;
            byte[] blk = new byte[clusterSize];
            file.write(off, ByteBuffer.wrap(blk));
            refBlocks.put(off, blk);
            table[(int) (long) newIdx.get(k)] = off;
        }
        long tableOffset = (start + blocks) << clusterBits;
        long oldOffset = header.refcountTableOffset;
        int oldClusters = header.refcountTableClusters;
        allocEnd = start + blocks + tableClusters;
        refTable = table;
        // Every block the area needs exists now: this cannot recurse into growTable.
        reserved.push(new long[] {start, start + blocks + tableClusters});
        try {
            addRefcount(start, blocks + tableClusters, +1);
        } finally {
            reserved.pop();
        }
        writeBackRefBlocks();
        ByteBuffer tb = ByteBuffer.allocate(table.length * 8);
        tb.asLongBuffer().put(table);
        file.write(tableOffset, tb);
        flushFile(); // the new blocks and table before the header points at them
        header.refcountTableOffset = tableOffset;
        header.refcountTableClusters = (int) tableClusters;
        ByteBuffer hb = ByteBuffer.allocate(12).putLong(0, tableOffset).putInt(8, (int) tableClusters);
        file.write(48, hb);
        flushFile(); // the header before the old table's clusters can be reused
        addRefcount(oldOffset >>> clusterBits, oldClusters, -1);
    }

    /** First run of {@code n} free clusters at or after the hint (QEMU's alloc_clusters_noref). */
    private long findFree(long n) throws IOException {
        long start = freeHint;
        outer:
        while (true) {
            for (long[] r : reserved) {
                if (start < r[1] && start + n > r[0]) {
                    start = r[1];
                    continue outer;
                }
            }
            for (long i = start; i < start + n; i++) {
                if (refcount(i) != 0) {
                    start = i + 1;
                    continue outer;
                }
            }
            return start;
        }
    }

    /**
     * One past the highest cluster ever handed out or present in the file at open: clusters at
     * or above it have never been written, so they read as zeroes (a hole or past the end).
     */
    long allocEndCluster() {
        return allocEnd;
    }

    /** Allocates {@code n} contiguous clusters with refcount 1; returns the host offset. */
    long allocClusters(long n) throws IOException {
        long start = findFree(n);
        freeHint = start + n;
        allocEnd = Math.max(allocEnd, start + n);
        reserved.push(new long[] {start, start + n});
        try {
            addRefcount(start, n, +1);
        } finally {
            reserved.pop();
        }
        return start << clusterBits;
    }

    /** Gives back clusters after a failed request; a failure here only leaks them. */
    void freeQuietly(long offset, long clusters) {
        try {
            addRefcount(offset >>> clusterBits, clusters, -1);
        } catch (IOException | RuntimeException ignored) {
            // leaked clusters are harmless (qemu-img check -r leaks)
        }
    }

    /**
     * Drops the references of L2 entries that were just replaced in memory: their clusters are
     * freed at the next {@link #writeBack()}, once the L2 change is durable. Until then the
     * clusters stay allocated, so they cannot be reused while a table on disk still points at
     * them. {@code passDiscard}: pass a discard of the freed clusters down to the file. Caller
     * holds the lock.
     */
    void releaseEntries(List<Long> entries, boolean passDiscard) {
        pendingFrees.addAll(entries);
        for (int i = 0; i < entries.size(); i++) {
            pendingDiscards.add(passDiscard);
        }
        onDirty.run();
    }

    /**
     * Frees the clusters of replaced L2 entries. The L2 tables were written (see
     * {@link #writeBack()}); a flush makes them durable before any refcount drops (QEMU makes
     * its refcount cache depend on the L2 cache for decrements). A failure keeps the rest
     * pending for the next write-back. Caller holds the lock.
     */
    private void freePending() throws IOException {
        if (pendingFrees.isEmpty()) {
            return;
        }
        if (tablesUnflushed) {
            flushFile();
        }
        while (!pendingFrees.isEmpty()) {
            long e = pendingFrees.getFirst();
            freeEntry(e);
            pendingFrees.removeFirst();
            boolean discard = pendingDiscards.removeFirst();
            long off = e & OFFSET_MASK;
            // QEMU's pass-discard-request (on by default): a guest discard or unmapping
            // write-zeroes that frees a cluster punches it out of the file. Under the lock, so
            // nobody can have reallocated the cluster yet.
            if (discard && (e & COMPRESSED) == 0 && off != 0 && refcount(off >>> clusterBits) == 0) {
                try {
                    file.discard(off, clusterSize);
                } catch (IOException | RuntimeException ignored) {
                    // a discard is a hint
                }
            }
        }
    }

    /** Drops one reference to what an L2 entry points at (QEMU's qcow2_free_any_cluster). */
    void freeEntry(long entry) throws IOException {
        if ((entry & COMPRESSED) != 0) {
            long[] c = compressedRange(entry);
            long first = (c[0] & ~511L) >>> clusterBits;
            long last = (c[0] + c[1] - 1) >>> clusterBits;
            addRefcount(first, last - first + 1, -1);
            return;
        }
        long off = entry & OFFSET_MASK;
        if (off != 0) {
            addRefcount(off >>> clusterBits, 1, -1);
        }
    }

    /**
     * Host byte offset and the byte length to read for a compressed L2 entry (qcow2.txt
     * "Compressed Clusters Descriptor": x = 62 - (cluster_bits - 8)).
     */
    long[] compressedRange(long entry) {
        int x = 62 - (clusterBits - 8);
        long offset = entry & ((1L << x) - 1);
        long sectors = ((entry >>> x) & ((1L << (clusterBits - 8)) - 1)) + 1;
        long length = sectors * 512 - (offset & 511);
        return new long[] {offset, length};
    }

    /** The unit a disk writes atomically: a write of one aligned sector lands whole or not at all. */
    private static final int SECTOR = 512;

    /**
     * Rewrites cluster 0 from {@link #header}. Caller holds the lock.
     * <p>
     * jblockd's intent marker (autoclear bit 63, in sector 0) vouches for the bitmap metadata the
     * rest of cluster 0 describes (docs/qcow2-bitmaps.md). A disk may land any subset of the
     * sectors of a write that was not flushed, so the marker must never be durable next to a
     * half-written rest: when bytes past sector 0 change, a write of sector 0 alone clears the
     * marker first (flushed), the new cluster is written with the marker clear, and only after
     * another flush does a write of sector 0 alone set it again. A change within sector 0 is one
     * atomic write. The caller flushes after the last write, as before.
     */
    void writeHeader() throws IOException {
        byte[] next = header.serialize();
        if (header.version < 3 || clusterSize <= SECTOR) {
            file.write(0, ByteBuffer.wrap(next));
            return;
        }
        byte[] cur = new byte[clusterSize];
        file.read(0, ByteBuffer.wrap(cur));
        if (java.util.Arrays.equals(cur, SECTOR, clusterSize, next, SECTOR, clusterSize)) {
            file.write(0, ByteBuffer.wrap(next, 0, SECTOR));
            return;
        }
        if (intentMarker(cur)) {
            setIntentMarker(cur, false);
            file.write(0, ByteBuffer.wrap(cur, 0, SECTOR));
            flushFile();
        }
        if (!intentMarker(next)) {
            file.write(0, ByteBuffer.wrap(next));
            return;
        }
        byte[] cleared = next.clone();
        setIntentMarker(cleared, false);
        file.write(0, ByteBuffer.wrap(cleared));
        flushFile();
        file.write(0, ByteBuffer.wrap(next, 0, SECTOR));
    }

    private static boolean intentMarker(byte[] cluster0) {
        return (ByteBuffer.wrap(cluster0).getLong(88) & Qcow2Header.AUTOCLEAR_JBLOCKD_INTENT) != 0;
    }

    private static void setIntentMarker(byte[] cluster0, boolean on) {
        ByteBuffer b = ByteBuffer.wrap(cluster0);
        long v = b.getLong(88);
        b.putLong(88, on ? v | Qcow2Header.AUTOCLEAR_JBLOCKD_INTENT : v & ~Qcow2Header.AUTOCLEAR_JBLOCKD_INTENT);
    }

    /**
     * Writes every dirty L2 table and refcount block back and flushes the file (QEMU's
     * qcow2_flush_caches): afterwards new clusters' refcounts are durable, so a pointer to them
     * may be written. Caller holds the lock.
     */
    void flushMetadata() throws IOException {
        writeBack();
        flushFile();
    }

    /**
     * Drops one reference to every cluster that {@code [offset, offset + bytes)} touches (QEMU's
     * qcow2_free_clusters). With {@code discard} a cluster that becomes free is punched out of
     * the file (QEMU's QCOW2_DISCARD_ALWAYS, which it uses for bitmap data clusters). A failure
     * only leaks clusters. Caller holds the lock.
     */
    void freeClusters(long offset, long bytes, boolean discard) {
        if (bytes <= 0 || offset <= 0) {
            return;
        }
        long first = offset >>> clusterBits;
        long count = ((offset + bytes - 1) >>> clusterBits) - first + 1;
        freeQuietly(first << clusterBits, count);
        if (discard) {
            for (long c = first; c < first + count; c++) {
                try {
                    if (refcount(c) == 0) {
                        file.discard(c << clusterBits, clusterSize);
                    }
                } catch (IOException | RuntimeException ignored) {
                    // a discard is a hint
                }
            }
        }
    }
}
