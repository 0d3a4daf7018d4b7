package jblockd.block.qcow2;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.OptionalLong;
import java.util.zip.DataFormatException;
import java.util.zip.Inflater;

import jblockd.block.Allocation;
import jblockd.block.BackingHeader;
import jblockd.block.BlockChild;
import jblockd.block.BlockDriver;
import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.BlockdevRef;
import jblockd.block.Capabilities;
import jblockd.block.DriverRegistry;
import jblockd.block.Errno;
import jblockd.block.Filenames;
import jblockd.block.Extent;
import jblockd.block.FormatSpecific;
import jblockd.block.IoError;
import jblockd.block.OpenContext;
import jblockd.block.SnapshotInfo;

/**
 * The qcow2 format driver, byte-compatible with QEMU 7.2 (docs/interop/qcow2.txt, formats.md
 * §1-§6): v2 and v3 images, 512 B..2 MiB clusters, any refcount width, zlib-compressed clusters
 * (read; overwriting one copies it), zero clusters, a backing chain.
 * <p>
 * Concurrency: L1/L2 lookups are lock-free once a table is cached. Requests lock the guest
 * clusters they touch through {@link StripedLocks}: reads, and writes whose clusters are all
 * allocated and exclusively theirs (refcount 1, COPIED), shared, so their data I/O runs in
 * parallel; requests that change L2 entries exclusively, so no entry changes (and no cluster
 * is freed) under a request that looked it up. Metadata changes (allocation,
 * refcounts, L1/L2 updates) are serialised by {@link Metadata#lock}, which is never held during
 * guest data I/O.
 * <p>
 * Not supported (clear errors): encryption, external data files, extended L2 entries, zstd,
 * writing images with internal snapshots, writing dirty (lazy-refcount) images.
 */
public final class Qcow2Driver implements BlockDriver {
    private static final int UNALLOCATED = 0;
    private static final int NORMAL = 1;
    private static final int ZERO_PLAIN = 2;
    private static final int ZERO_ALLOC = 3;
    private static final int COMPRESSED = 4;
    /** Read-only zeroes to copy from (never written). */
    private static final byte[] ZEROES = new byte[64 * 1024];
    private static final int MAX_ZERO_CHUNK = 1 << 20;

    private final BlockNode fileNode;
    private final HostFile file;
    private final Metadata meta;
    private final Qcow2Header header;
    private final boolean readOnly;
    private final int clusterBits;
    private final int clusterSize;
    /** The virtual size; changes only in {@link #truncate}, with the node drained. */
    private volatile long size;
    private final StripedLocks stripes = new StripedLocks();
    private volatile BlockNode backing;
    /** Read on first query; immutable afterwards (see {@link #snapshots()}). */
    private volatile List<SnapshotInfo> snapshotList;
    private final Qcow2Bitmaps bitmaps;
    private final java.util.concurrent.atomic.AtomicBoolean writeBackScheduled =
            new java.util.concurrent.atomic.AtomicBoolean();
    /** Set under the metadata lock; the background write-back checks it there. */
    private volatile boolean closed;
    private static final long WRITE_BACK_DELAY_MS = 200;

    private Qcow2Driver(BlockNode fileNode, Metadata meta, Qcow2Bitmaps bitmaps, boolean readOnly,
                        boolean backgroundWriteBack) {
        this.fileNode = fileNode;
        this.bitmaps = bitmaps;
        this.file = meta.file;
        this.meta = meta;
        this.header = meta.header;
        this.readOnly = readOnly;
        this.clusterBits = meta.clusterBits;
        this.clusterSize = meta.clusterSize;
        this.size = header.size;
        if (backgroundWriteBack) {
            meta.onDirty = this::scheduleWriteBack;
        }
    }

    public static void register(DriverRegistry r) {
        r.<BlockdevOptions.Qcow2>register("qcow2", Qcow2Driver::open);
        r.registerFormat("qcow2", Qcow2Creator::create, Qcow2Driver::probe);
    }

    /**
     * blockdev-create's qcow2 step (QEMU qcow2_co_create on a {@code file} node): lays a new
     * image out in {@code file} ({@code o.path()} unused) with the same layout as
     * {@code qemu-img create}. The caller holds write and resize on the node.
     */
    public static void createOn(BlockNode file, jblockd.block.ImageCreator.Options o) throws IOException {
        Qcow2Creator.createOn(file, o);
    }

    /** QEMU's qcow2_probe(): the magic and a version of at least 2. */
    static boolean probe(ByteBuffer head) {
        int p = head.position();
        return head.remaining() >= 8 && head.getInt(p) == Qcow2Header.MAGIC && head.getInt(p + 4) >= 2;
    }

    public static Qcow2Driver open(BlockdevOptions.Qcow2 o, OpenContext ctx) throws IOException {
        boolean ro = o.common().readOnly();
        BlockNode fileNode = ctx.child(o.file(), "file", ro);
        if (fileNode == null) {
            throw new IoError(Errno.EINVAL, "qcow2 needs a 'file' child");
        }
        ro = ro || fileNode.readOnly();
        Qcow2Driver d = openOn(fileNode, HostFile.of(fileNode), ro, o.runtime(), true);
        // qcow2_update_options_prepare: freed clusters pass a discard to the file for a guest's
        // request (default: the node's discard=unmap) or for other reasons (default off)
        d.passDiscardRequest = o.runtime().passDiscardRequest() != null ? o.runtime().passDiscardRequest()
                : o.common().discardUnmap();
        d.meta.passDiscardOther = Boolean.TRUE.equals(o.runtime().passDiscardOther());
        d.startCacheCleaner(CacheSizes.cleanInterval(o.runtime()));
        BlockdevRef ref = o.backing();
        if (ref == null) {
            String name = d.header.backingFile;
            if (name != null && !name.isEmpty()) {
                d.backing = ctx.openBackingImage(Filenames.backingFilename(fileNode.driver().filename(), name),
                        d.header.backingFormat, true);
            }
        } else if (!(ref instanceof BlockdevRef.None)) {
            d.backing = ctx.child(ref, "backing", true);
        }
        return d;
    }

    static Qcow2Driver openOn(BlockNode fileNode, HostFile file, boolean ro) throws IOException {
        return openOn(fileNode, file, ro, Metadata.DEFAULT_CACHE_BYTES);
    }

    /** {@code cacheBytes}: metadata cache budget (tests shrink it to exercise eviction). */
    static Qcow2Driver openOn(BlockNode fileNode, HostFile file, boolean ro, long cacheBytes)
            throws IOException {
        return openOn(fileNode, file, ro, cacheBytes, true);
    }

    /**
     * {@code backgroundWriteBack} false: metadata reaches the file only on flush, cache pressure
     * and close, so the file's write sequence depends on the requests alone (the crash
     * simulation replays it by seed).
     */
    static Qcow2Driver openOn(BlockNode fileNode, HostFile file, boolean ro, long cacheBytes,
                              boolean backgroundWriteBack) throws IOException {
        return openOn(fileNode, file, ro, null, cacheBytes, backgroundWriteBack);
    }

    /** With the cache budgets of {@code runtime} (QEMU's rules, {@link CacheSizes}). */
    static Qcow2Driver openOn(BlockNode fileNode, HostFile file, boolean ro, BlockdevOptions.Qcow2Runtime runtime,
                              boolean backgroundWriteBack) throws IOException {
        return openOn(fileNode, file, ro, runtime, -1, backgroundWriteBack);
    }

    private static Qcow2Driver openOn(BlockNode fileNode, HostFile file, boolean ro,
                                      BlockdevOptions.Qcow2Runtime runtime, long cacheBytes,
                                      boolean backgroundWriteBack) throws IOException {
        long fileLength = file.length();
        ByteBuffer head = ByteBuffer.allocate((int) Math.min(fileLength, Qcow2Header.V3_LENGTH));
        file.read(0, head);
        head.flip();
        if (head.remaining() < 8 || head.getInt(0) != Qcow2Header.MAGIC) {
            throw new IoError(Errno.EINVAL, "Image is not in qcow2 format");
        }
        if (head.remaining() < Qcow2Header.V2_LENGTH) {
            throw new IoError(Errno.EINVAL, "qcow2 header is truncated (file is " + fileLength + " bytes)");
        }
        int bits = head.getInt(20);
        if (bits < 9 || bits > 21) {
            throw new IoError(Errno.EINVAL, "Unsupported cluster size: 2^" + bits);
        }
        ByteBuffer cluster0 = ByteBuffer.allocate((int) Math.min(fileLength, 1L << bits));
        file.read(0, cluster0);
        cluster0.flip();
        Qcow2Header h = Qcow2Header.parse(cluster0, fileLength);
        if (!ro) {
            if ((h.incompatible & Qcow2Header.INCOMPAT_CORRUPT) != 0) {
                throw new IoError(Errno.EACCES, "qcow2: Image is corrupt; cannot be opened read/write");
            }
            if ((h.incompatible & Qcow2Header.INCOMPAT_DIRTY) != 0) {
                throw new IoError(Errno.ENOTSUP, "qcow2: Image is dirty (lazy refcounts were in use); "
                        + "repair it with 'qemu-img check -r all' before opening it read/write");
            }
            if (h.nbSnapshots > 0) {
                throw new IoError(Errno.ENOTSUP,
                        "qcow2: writing images with internal snapshots is not supported; open it read-only");
            }
        }
        CacheSizes caches = runtime != null ? CacheSizes.of(runtime, h.size, 1 << h.clusterBits)
                : new CacheSizes(cacheBytes, cacheBytes / 2);
        Metadata meta = new Metadata(file, h, caches.l2Bytes(), caches.refcountBytes());
        meta.markCorruptOnDisk = !ro;
        // Loads (and checks) the persistent bitmaps; read-write, it also clears the autoclear
        // bits of features we do not maintain (qcow2.txt "autoclear features": raw external data,
        // unknown ones) and marks the bitmaps in_use, durably, before any write can happen.
        Qcow2Bitmaps bitmaps = Qcow2Bitmaps.open(meta, ro, fileNode == null ? null : fileNode.driver().filename());
        return new Qcow2Driver(fileNode, meta, bitmaps, ro, backgroundWriteBack);
    }

    // ------------------------------------------------------------------ helpers

    private static int type(long e) {
        if ((e & Metadata.COMPRESSED) != 0) {
            return COMPRESSED;
        }
        long off = e & Metadata.OFFSET_MASK;
        if ((e & Metadata.ZERO) != 0) {
            return off != 0 ? ZERO_ALLOC : ZERO_PLAIN;
        }
        return off != 0 ? NORMAL : UNALLOCATED;
    }

    private static boolean ownedInPlace(long e) {
        return type(e) == NORMAL && (e & Metadata.COPIED) != 0;
    }

    private static ByteBuffer take(ByteBuffer b, int len) {
        ByteBuffer s = b.slice(b.position(), len);
        b.position(b.position() + len);
        return s;
    }

    private static void fillZero(ByteBuffer b) {
        while (b.hasRemaining()) {
            b.put(ZEROES, 0, Math.min(ZEROES.length, b.remaining()));
        }
    }

    private long clusterMask() {
        return clusterSize - 1L;
    }

    // ------------------------------------------------------------------ read

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        if (!dst.hasRemaining()) {
            return;
        }
        // Shared stripes: the entries this read looks up cannot change before it has read their
        // host clusters, so none of those can be freed and reused by another guest offset
        // meanwhile (it would read that offset's data as its own).
        long g0 = offset >>> clusterBits;
        long g1 = (offset + dst.remaining() - 1) >>> clusterBits;
        try (StripedLocks.Held ignored = stripes.lock(g0, g1, false)) {
            readClusters(offset, dst);
        }
    }

    private void readClusters(long offset, ByteBuffer dst) throws IOException {
        long pos = offset;
        while (dst.hasRemaining()) {
            long g = pos >>> clusterBits;
            int in = (int) (pos & clusterMask());
            int first = (int) Math.min(clusterSize - in, dst.remaining());
            long e = meta.l2Entry(g);
            int t = type(e);
            int len = first;
            switch (t) {
                case NORMAL -> {
                    long host = (e & Metadata.OFFSET_MASK) + in;
                    long expect = (e & Metadata.OFFSET_MASK) + clusterSize;
                    for (long k = g + 1; len < dst.remaining(); k++) {
                        long e2 = meta.l2Entry(k);
                        if (type(e2) != NORMAL || (e2 & Metadata.OFFSET_MASK) != expect) {
                            break;
                        }
                        len += (int) Math.min(clusterSize, dst.remaining() - len);
                        expect += clusterSize;
                    }
                    // A data cluster starting at or past EOF was cut off (a truncated copy of
                    // the image): the file would read as zeroes where the guest wrote data.
                    // Data is written before the L2 entry that points at it, so a healthy
                    // image never has one. EIO, not zeroes.
                    if (expect - clusterSize >= file.length()) {
                        throw new IoError(Errno.EIO, "qcow2: corrupt image: data cluster at 0x"
                                + Long.toHexString(expect - clusterSize) + " is past the end of the image file");
                    }
                    file.read(host, take(dst, len));
                }
                case UNALLOCATED, ZERO_PLAIN, ZERO_ALLOC -> {
                    boolean zero = t != UNALLOCATED;
                    for (long k = g + 1; len < dst.remaining(); k++) {
                        int t2 = type(meta.l2Entry(k));
                        boolean z2 = t2 == ZERO_PLAIN || t2 == ZERO_ALLOC;
                        if (t2 != UNALLOCATED && !z2 || z2 != zero) {
                            break;
                        }
                        len += (int) Math.min(clusterSize, dst.remaining() - len);
                    }
                    if (zero) {
                        fillZero(take(dst, len));
                    } else {
                        readBacking(pos, take(dst, len));
                    }
                }
                default -> dst.put(decompress(e), in, len);
            }
            pos += len;
        }
    }

    /** Reads from the backing node; zeroes without one and past its end (it may be shorter). */
    private void readBacking(long pos, ByteBuffer buf) throws IOException {
        BlockNode b = backing;
        if (b != null) {
            long bl = b.length();
            if (pos < bl) {
                int k = (int) Math.min(buf.remaining(), bl - pos);
                b.read(pos, take(buf, k));
            }
        }
        fillZero(buf);
    }

    private byte[] decompress(long e) throws IOException {
        long[] r = meta.compressedRange(e);
        if (r[1] <= 0 || r[1] > 2L * clusterSize + 512) {
            throw new IoError(Errno.EIO, "qcow2: corrupt compressed cluster descriptor 0x" + Long.toHexString(e));
        }
        byte[] in = new byte[(int) r[1]];
        file.read(r[0], ByteBuffer.wrap(in));
        byte[] out = new byte[clusterSize];
        Inflater inf = new Inflater(true); // raw deflate, as QEMU's qcow2_co_decompress (window -12)
        try {
            inf.setInput(in);
            int n = 0;
            while (n < clusterSize) {
                int k = inf.inflate(out, n, clusterSize - n);
                if (k == 0 && (inf.finished() || inf.needsInput() || inf.needsDictionary())) {
                    break;
                }
                n += k;
            }
            if (n < clusterSize) {
                throw new IoError(Errno.EIO, "qcow2: compressed cluster at 0x" + Long.toHexString(r[0])
                        + " is corrupt (short)");
            }
        } catch (DataFormatException ex) {
            throw new IoError(Errno.EIO, "qcow2: compressed cluster at 0x" + Long.toHexString(r[0])
                    + " is corrupt: " + ex.getMessage(), ex);
        } finally {
            inf.end();
        }
        return out;
    }

    /** The current content of guest cluster {@code g} (entry {@code e}), for copy-on-write. */
    private void cowRead(long g, long e, byte[] buf) throws IOException {
        switch (type(e)) {
            case UNALLOCATED -> {
                long start = g << clusterBits;
                int valid = (int) Math.min(clusterSize, size - start);
                readBacking(start, ByteBuffer.wrap(buf, 0, valid));
            }
            case NORMAL -> file.read(e & Metadata.OFFSET_MASK, ByteBuffer.wrap(buf));
            case COMPRESSED -> System.arraycopy(decompress(e), 0, buf, 0, clusterSize);
            default -> {
                // zero clusters: buf is already zeroes
            }
        }
    }

    /** True when the old content of guest cluster {@code g} (entry {@code e}) is all zeroes. */
    private boolean cowIsZero(long g, long e) throws IOException {
        return switch (type(e)) {
            case ZERO_PLAIN, ZERO_ALLOC -> true;
            case UNALLOCATED -> {
                BlockNode b = backing;
                yield b == null || (g << clusterBits) >= b.length();
            }
            default -> false;
        };
    }

    // ------------------------------------------------------------------ write

    @Override
    public void write(long offset, ByteBuffer src, boolean fua) throws IOException {
        int len = src.remaining();
        if (len == 0) {
            return;
        }
        refuseWritesIfCorrupt();
        // The bitmaps' write-intent record, before anything of the request reaches the file.
        bitmaps.beforeWrite(offset, len);
        long g0 = offset >>> clusterBits;
        long g1 = (offset + len - 1) >>> clusterBits;
        boolean done = false;
        try (StripedLocks.Held ignored = stripes.lock(g0, g1, false)) {
            long[] entries = new long[(int) (g1 - g0 + 1)];
            boolean inPlace = true;
            for (int i = 0; i < entries.length && inPlace; i++) {
                entries[i] = meta.l2Entry(g0 + i);
                inPlace = ownedInPlace(entries[i]);
            }
            if (inPlace) {
                writeData(offset, src, entries, null);
                done = true;
            }
        }
        if (!done) {
            try (StripedLocks.Held ignored = stripes.lock(g0, g1, true)) {
                writeAllocating(offset, src, g0, g1);
            }
        }
        if (fua) {
            // FUA must make the write durable *including* the L2/refcount updates that make it
            // visible, which the write-back metadata cache still holds: a full flush, as QEMU's
            // generic layer emulates FUA for qcow2 (bdrv_co_flush after the write). Flushing
            // only the file loses acknowledged writes on kill -9 (KillNineIT).
            flush();
        }
    }

    /**
     * Writes guest data to the host clusters in {@code hosts} (entries or, for fresh clusters,
     * their new offsets), merging host-contiguous runs. {@code cow} (may be null) marks the
     * partially written fresh clusters, which get a full cluster assembled from their old
     * content first.
     */
    private void writeData(long offset, ByteBuffer src, long[] hosts, long[] cow) throws IOException {
        long g0 = offset >>> clusterBits;
        long pos = offset;
        long end = offset + src.remaining();
        int srcPos = src.position();
        long runHost = -1;
        int runSrc = 0;
        int runLen = 0;
        for (int i = 0; i < hosts.length; i++) {
            int in = (int) (pos & clusterMask());
            int len = (int) Math.min(clusterSize - in, end - pos);
            long host = hosts[i] & Metadata.OFFSET_MASK;
            if (cow != null && cow[i] != -1) {
                if (runLen > 0) {
                    file.write(runHost, src.slice(runSrc, runLen));
                    runLen = 0;
                }
                byte[] buf = new byte[clusterSize];
                cowRead(g0 + i, cow[i], buf);
                src.get(srcPos, buf, in, len);
                file.write(host, ByteBuffer.wrap(buf));
            } else if (runLen > 0 && runHost + runLen == host + in) {
                runLen += len;
            } else {
                if (runLen > 0) {
                    file.write(runHost, src.slice(runSrc, runLen));
                }
                runHost = host + in;
                runSrc = srcPos;
                runLen = len;
            }
            srcPos += len;
            pos += len;
        }
        if (runLen > 0) {
            file.write(runHost, src.slice(runSrc, runLen));
        }
        src.position(src.limit());
    }

    /** The write path that changes L2 entries; the caller holds the clusters' stripes exclusively. */
    private void writeAllocating(long offset, ByteBuffer src, long g0, long g1) throws IOException {
        int n = (int) (g1 - g0 + 1);
        long end = offset + src.remaining();
        long[] old = new long[n];
        long[] hosts = new long[n];
        long[] cow = new long[n];
        int fresh = 0;
        for (int i = 0; i < n; i++) {
            old[i] = meta.l2Entry(g0 + i);
            cow[i] = -1;
            if (!ownedInPlace(old[i])) {
                fresh++;
            }
        }
        long hostStart = 0;
        boolean virgin = false;
        if (fresh > 0) {
            meta.lock.lock();
            try {
                meta.maybeWriteBack();
                long before = meta.allocEndCluster();
                hostStart = meta.allocClusters(fresh);
                virgin = (hostStart >>> clusterBits) >= before;
            } finally {
                meta.lock.unlock();
            }
        }
        int j = 0;
        for (int i = 0; i < n; i++) {
            if (ownedInPlace(old[i])) {
                hosts[i] = old[i];
                continue;
            }
            hosts[i] = hostStart + (long) (j++) * clusterSize;
            long cStart = (g0 + i) << clusterBits;
            long wStart = Math.max(offset, cStart);
            long wEnd = Math.min(end, cStart + clusterSize);
            // A write covering the cluster up to the end of the image needs no old data.
            boolean full = wStart == cStart && (wEnd == cStart + clusterSize || wEnd >= size);
            // Copy-on-write of zeroes into never-written clusters is a no-op: they read as
            // zeroes already (QEMU avoids it too, with write-zeroes on the file).
            if (!full && !(virgin && cowIsZero(g0 + i, old[i]))) {
                cow[i] = old[i];
            }
        }
        try {
            writeData(offset, src, hosts, cow);
        } catch (IOException | RuntimeException e) {
            if (fresh > 0) {
                meta.lock.lock();
                try {
                    meta.freeQuietly(hostStart, fresh);
                } finally {
                    meta.lock.unlock();
                }
            }
            throw e;
        }
        if (fresh == 0) {
            return;
        }
        meta.lock.lock();
        try {
            int i = 0;
            int linked = 0; // fresh clusters whose L2 entry points at them now
            try {
                while (i < n) {
                    long g = g0 + i;
                    L2Cache.Table t = meta.l2TableForWrite(g);
                    int idx0 = (int) (g % meta.l2Entries);
                    int idx = idx0;
                    int lastChanged = -1;
                    int firstChanged = Integer.MAX_VALUE;
                    int linking = 0;
                    while (i < n && idx < meta.l2Entries) {
                        if (!ownedInPlace(old[i])) {
                            t.entries.set(idx, hosts[i] | Metadata.COPIED);
                            firstChanged = Math.min(firstChanged, idx);
                            lastChanged = idx;
                            linking++;
                        }
                        i++;
                        idx++;
                    }
                    if (lastChanged >= 0) {
                        meta.markL2Linked(t, firstChanged, lastChanged + 1);
                    }
                    linked += linking;
                }
            } catch (IOException | RuntimeException e) {
                // The clusters not linked yet go back; the linked ones hold the new data and
                // the clusters they replaced are released.
                meta.freeQuietly(hostStart + (long) linked * clusterSize, fresh - linked);
                List<Long> replaced = new ArrayList<>();
                for (int k = 0, seen = 0; k < n && seen < linked; k++) {
                    if (!ownedInPlace(old[k])) {
                        seen++;
                        int tk = type(old[k]);
                        if (tk == NORMAL || tk == ZERO_ALLOC || tk == COMPRESSED) {
                            replaced.add(old[k]);
                        }
                    }
                }
                if (!replaced.isEmpty()) {
                    meta.releaseEntries(replaced, false);
                }
                throw e;
            }
            List<Long> replaced = new ArrayList<>();
            for (int k = 0; k < n; k++) {
                int tk = type(old[k]);
                if (!ownedInPlace(old[k]) && (tk == NORMAL || tk == ZERO_ALLOC || tk == COMPRESSED)) {
                    replaced.add(old[k]);
                }
            }
            if (!replaced.isEmpty()) {
                meta.releaseEntries(replaced, false);
            }
        } finally {
            meta.lock.unlock();
        }
    }

    // ------------------------------------------------------------------ zeroes and discard

    private enum Unmap { ZEROES, ZEROES_UNMAP, DISCARD }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        unmapRange(offset, length, mayUnmap ? Unmap.ZEROES_UNMAP : Unmap.ZEROES);
    }

    @Override
    public void discard(long offset, long length) throws IOException {
        unmapRange(offset, length, Unmap.DISCARD);
    }

    /**
     * Once corruption was found at runtime no write reaches the image: allocating on top of
     * broken metadata could overwrite data or other metadata (QEMU stops all I/O to it).
     */
    private void refuseWritesIfCorrupt() throws IoError {
        String c = meta.corruption();
        if (c != null) {
            throw new IoError(Errno.EIO, "qcow2: image is marked corrupt (" + c + "); writes are refused");
        }
    }

    private void unmapRange(long offset, long length, Unmap mode) throws IOException {
        refuseWritesIfCorrupt();
        bitmaps.beforeWrite(offset, length);
        long end = offset + length;
        long a = (offset + clusterMask()) & ~clusterMask();
        // The partial last cluster of the image counts as whole (nothing follows it).
        long b = end >= size ? (end + clusterMask()) & ~clusterMask() : end & ~clusterMask();
        if (a >= b) {
            if (mode != Unmap.DISCARD) {
                writeRealZeroes(offset, length);
            }
            return;
        }
        if (mode != Unmap.DISCARD) {
            if (offset < a) {
                writeRealZeroes(offset, a - offset);
            }
            if (b < end) {
                writeRealZeroes(b, end - b);
            }
        }
        long gFirst = a >>> clusterBits;
        long gEnd = b >>> clusterBits;
        boolean v3 = header.version >= 3;
        // Zeroes must hide a backing file even when it is not open here: a node added with
        // "backing": null (libvirt's incremental backup target over the previous backup) is read
        // later as a chain, and an unallocated cluster would show the older image's data. QEMU's
        // zero_in_l2_slice sets the zero flag whatever bs->backing is. A discard goes by the open
        // backing only, as QEMU's discard_in_l2_slice does.
        boolean backed = mode == Unmap.DISCARD ? backing != null : backing != null || header.backingFile != null;
        if (mode != Unmap.DISCARD && !v3 && backed) {
            // v2 has no zero flag: with a backing file the zeroes must be real.
            writeRealZeroes(a, Math.min(b, size) - a);
            return;
        }
        try (StripedLocks.Held ignored = stripes.lock(gFirst, gEnd - 1, true)) {
            meta.lock.lock();
            try {
                meta.maybeWriteBack();
                unmapClusters(gFirst, gEnd, mode, v3, backed);
            } finally {
                meta.lock.unlock();
            }
        }
    }

    /**
     * Sets the L2 entries of guest clusters {@code [gFirst, gEnd)} (QEMU's zero_in_l2_slice /
     * discard_in_l2_slice): v3 writes the zero flag (keeping an owned cluster preallocated
     * unless unmapping); a discard leaves the zero flag only when a backing file would show
     * through; otherwise (v2 without backing, discard) the cluster is deallocated.
     */
    private void unmapClusters(long gFirst, long gEnd, Unmap mode, boolean v3, boolean hasBacking)
            throws IOException {
        boolean setZero = mode == Unmap.DISCARD ? v3 && hasBacking : v3;
        List<Long> toFree = new ArrayList<>();
        long g = gFirst;
        try {
            unmapLoop(g, gEnd, mode, setZero, hasBacking, toFree);
        } finally {
            // Also after a failure part-way: what was unlinked in memory is released.
            if (!toFree.isEmpty()) {
                meta.releaseEntries(toFree, mode != Unmap.ZEROES && passDiscardRequest);
            }
        }
    }

    private void unmapLoop(long g, long gEnd, Unmap mode, boolean setZero, boolean hasBacking,
                           List<Long> toFree) throws IOException {
        while (g < gEnd) {
            long tableEnd = Math.min(gEnd, (g / meta.l2Entries + 1) * meta.l2Entries);
            if (meta.l2Missing(g) && (!hasBacking || !setZero)) {
                g = tableEnd; // already reads as zeroes, nothing to free
                continue;
            }
            L2Cache.Table t = meta.l2TableForWrite(g);
            int i0 = (int) (g % meta.l2Entries);
            int i1 = i0 + (int) (tableEnd - g);
            for (int i = i0; i < i1; i++) {
                long e = t.entries.get(i);
                long ne;
                boolean keep = mode == Unmap.ZEROES && (e & Metadata.COPIED) != 0
                        && (type(e) == NORMAL || type(e) == ZERO_ALLOC);
                if (setZero && keep) {
                    ne = (e & Metadata.OFFSET_MASK) | Metadata.COPIED | Metadata.ZERO;
                } else {
                    ne = setZero ? Metadata.ZERO : 0;
                    int te = type(e);
                    if (te == NORMAL || te == ZERO_ALLOC || te == COMPRESSED) {
                        toFree.add(e);
                    }
                }
                t.entries.set(i, ne);
            }
            meta.markL2Dirty(t, i0, i1);
            g = tableEnd;
        }
    }

    private void writeRealZeroes(long offset, long length) throws IOException {
        long pos = offset;
        long end = Math.min(offset + length, size);
        while (pos < end) {
            int n = (int) Math.min(MAX_ZERO_CHUNK, end - pos);
            write(pos, ByteBuffer.allocate(n), false);
            pos += n;
        }
    }

    // ------------------------------------------------------------------ status, flush, misc

    @Override
    public Extent status(long offset, long length) throws IOException {
        long end = Math.min(offset + length, size);
        long pos = offset;
        Allocation run = null;
        while (pos < end) {
            long g = pos >>> clusterBits;
            Allocation a;
            long next;
            if (meta.l2Missing(g)) {
                a = Allocation.UNALLOCATED;
                next = ((g / meta.l2Entries) + 1) * meta.l2Entries << clusterBits;
            } else {
                a = switch (type(meta.l2Entry(g))) {
                    case UNALLOCATED -> Allocation.UNALLOCATED;
                    case ZERO_PLAIN, ZERO_ALLOC -> Allocation.ZERO;
                    default -> Allocation.DATA;
                };
                next = (g + 1) << clusterBits;
            }
            if (run == null) {
                run = a;
            } else if (run != a) {
                break;
            }
            pos = Math.min(end, next);
        }
        if (run == null) {
            return new Extent(offset, length, Allocation.UNALLOCATED);
        }
        return new Extent(offset, pos - offset, run);
    }

    @Override
    public void flush() throws IOException {
        if (!readOnly) {
            meta.lock.lock();
            try {
                meta.writeBack();
            } finally {
                meta.lock.unlock();
            }
        }
        file.flush();
    }

    /** The data clusters are written to the file at once; only the metadata waits (for flush). */
    @Override
    public void startWriteback() throws IOException {
        fileNode.startWriteback();
    }

    /**
     * Metadata changed in memory: write it back in a moment even if nobody flushes, so that an
     * image left open still reaches a consistent state on disk soon (QEMU only writes back on
     * flush, eviction and close). One short-lived virtual thread per burst.
     */
    /** The image's metadata (tests of the caches). */
    Metadata metadata() {
        return meta;
    }

    /** QEMU's pass-discard-request, set once at open (pass-discard-other lives in {@link Metadata}). */
    private volatile boolean passDiscardRequest = true;

    /**
     * cache-clean-interval: every {@code seconds} (0: never) the cache entries nobody used since
     * the previous round are dropped (QEMU's cache_clean_timer), until the node closes.
     */
    /** The cache-clean-interval thread, interrupted at close; null without one. */
    private volatile Thread cacheCleaner;

    private void startCacheCleaner(long seconds) {
        if (seconds == 0) {
            return;
        }
        cacheCleaner = Thread.ofVirtual().name("qcow2-cache-clean").start(() -> {
            while (!closed) {
                try {
                    Thread.sleep(java.time.Duration.ofSeconds(seconds));
                } catch (InterruptedException e) {
                    return;
                }
                if (!closed) {
                    meta.cleanUnusedCaches();
                }
            }
        });
    }

    private void scheduleWriteBack() {
        if (readOnly || closed || !writeBackScheduled.compareAndSet(false, true)) {
            return;
        }
        Thread.ofVirtual().name("qcow2-writeback").start(() -> {
            try {
                Thread.sleep(WRITE_BACK_DELAY_MS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            writeBackScheduled.set(false);
            meta.lock.lock();
            try {
                if (!closed && meta.dirty()) {
                    meta.writeBack();
                }
            } catch (IOException | RuntimeException e) {
                // stays dirty: the next write-back or flush retries and reports it
            } finally {
                meta.lock.unlock();
            }
        });
    }

    /**
     * block_resize of a qcow2 (QEMU qcow2_co_truncate() for a growing image without
     * preallocation): the L1 table grows first if the new size needs more entries
     * ({@link Metadata#growL1}), then the header's size is written and flushed. The new space
     * reads as zeroes (or from the backing file, as QEMU reads it). Refused, each with its
     * reason: sizes not a multiple of 512 (QEMU's text), shrinking, images with internal
     * snapshots or persistent bitmaps (their tables and jblockd's crash record are sized for
     * the old length) — QEMU 7.2 does all three (README: not implemented).
     */
    @Override
    public void truncate(long newSize) throws IOException {
        if (readOnly) {
            throw IoError.of(Errno.EROFS);
        }
        if (newSize % 512 != 0) {
            throw new IoError(Errno.EINVAL, "The new size must be a multiple of 512");
        }
        if (newSize == size) {
            return;
        }
        if (newSize < size) {
            throw new IoError(Errno.ENOTSUP, "jblockd cannot shrink qcow2 images yet");
        }
        if (header.nbSnapshots > 0) {
            throw new IoError(Errno.ENOTSUP, "Can't resize an image which has snapshots");
        }
        if (bitmaps.any()) {
            throw new IoError(Errno.ENOTSUP, "jblockd cannot resize a qcow2 image with persistent bitmaps yet");
        }
        refuseWritesIfCorrupt();
        long perL1 = (long) clusterSize * meta.l2Entries;
        long entries = (newSize + perL1 - 1) / perL1;
        if (entries > Integer.MAX_VALUE) {
            throw new IoError(Errno.EFBIG, "qcow2: L1 table too large");
        }
        meta.lock.lock();
        try {
            meta.writeBack(); // metadata in the cache reaches the file before the header changes
            meta.growL1((int) entries);
            meta.writeSize(newSize);
            size = newSize;
        } finally {
            meta.lock.unlock();
        }
    }


    @Override
    public long length() {
        return size;
    }

    @Override
    public Capabilities capabilities() {
        return new Capabilities(readOnly, true, true, true, 1, false);
    }

    @Override
    public void close() throws IOException {
        try {
            if (!readOnly) {
                flush();
            }
        } finally {
            meta.lock.lock();
            try {
                closed = true;
            } finally {
                meta.lock.unlock();
            }
            Thread cleaner = cacheCleaner;
            if (cleaner != null) {
                cleaner.interrupt();
            }
        }
    }

    @Override
    public String driverName() {
        return "qcow2";
    }

    @Override
    public String filename() {
        return fileNode == null ? null : fileNode.driver().filename();
    }

    @Override
    public List<BlockChild> children() {
        List<BlockChild> c = new ArrayList<>(2);
        if (fileNode != null) {
            c.add(new BlockChild("file", fileNode));
        }
        BlockNode b = backing;
        if (b != null) {
            c.add(new BlockChild("backing", b));
        }
        return c;
    }

    @Override
    public BlockNode backing() {
        return backing;
    }

    @Override
    public boolean supportsBacking() {
        return true;
    }

    @Override
    public void linkBacking(BlockNode newBacking) {
        backing = newBacking;
    }

    /** Rewrites the backing file name and format extension in cluster 0 (qcow2_change_backing_file). */
    @Override
    public void setBacking(BlockNode newBacking, String backingFileName, String backingFormat)
            throws IOException {
        if (readOnly) {
            throw new IoError(Errno.EROFS, "qcow2: cannot change the backing file of a read-only image");
        }
        if (backingFileName != null && backingFileName.getBytes(java.nio.charset.StandardCharsets.UTF_8).length
                > Qcow2Header.MAX_BACKING_NAME) {
            throw new IoError(Errno.EINVAL, "Backing file name too long");
        }
        meta.lock.lock();
        try {
            String oldName = header.backingFile;
            String oldFormat = header.backingFormat;
            header.backingFile = backingFileName;
            header.backingFormat = backingFileName == null ? null : backingFormat;
            try {
                meta.writeHeader();
            } catch (IOException e) {
                header.backingFile = oldName;
                header.backingFormat = oldFormat;
                throw e;
            }
            file.flush();
            backing = newBacking;
        } finally {
            meta.lock.unlock();
        }
    }

    @Override
    public String formatName() {
        return "qcow2";
    }

    @Override
    public int clusterSize() {
        return clusterSize;
    }

    /** QEMU sums a format's data children (bdrv_sum_allocated_file_size): the file's allocation. */
    @Override
    public OptionalLong allocatedFileSize() throws IOException {
        return fileNode == null ? OptionalLong.empty() : fileNode.driver().allocatedFileSize();
    }

    /** qcow2_get_info(): is_dirty is the header's dirty bit (only a read-only open keeps one). */
    @Override
    public Optional<Boolean> dirtyFlag() {
        return Optional.of((header.incompatible & Qcow2Header.INCOMPAT_DIRTY) != 0);
    }

    @Override
    public Optional<BackingHeader> backingHeader() {
        meta.lock.lock();
        try {
            String name = header.backingFile;
            return name == null || name.isEmpty() ? Optional.empty()
                    : Optional.of(new BackingHeader(name, header.backingFormat));
        } finally {
            meta.lock.unlock();
        }
    }

    /**
     * The snapshot table (read once: jblockd never changes it, and refuses to open an image
     * with snapshots read-write).
     */
    public List<SnapshotInfo> snapshots() throws IOException {
        List<SnapshotInfo> s = snapshotList;
        if (s == null) {
            s = ImageTables.snapshots(file, header);
            snapshotList = s;
        }
        return s;
    }

    /**
     * The snapshot table is listed; taking or deleting a qcow2 internal snapshot is not done in
     * jblockd (it would rewrite the L1 table and refcounts of every snapshot), and says so.
     */
    @Override
    public Optional<jblockd.block.InternalSnapshots> internalSnapshots() {
        return Optional.of(new jblockd.block.InternalSnapshots() {
            @Override
            public List<SnapshotInfo> list() throws IOException {
                return snapshots();
            }

            @Override
            public void create(String name) throws IOException {
                throw new IoError(Errno.ENOTSUP, NO_INTERNAL_SNAPSHOTS);
            }

            @Override
            public void delete(String id, String name) throws IOException {
                throw new IoError(Errno.ENOTSUP, NO_INTERNAL_SNAPSHOTS);
            }
        });
    }

    /** Why qcow2 internal snapshots are refused (they are listed, not made). */
    public static final String NO_INTERNAL_SNAPSHOTS =
            "jblockd does not take or delete internal qcow2 snapshots (use an external snapshot, blockdev-snapshot-sync)";

    /** qcow2_get_specific_info() of QEMU 7.2: v2 reports fewer members. */
    @Override
    public Optional<FormatSpecific> formatSpecific() throws IOException {
        String compression = header.compressionType == 1 ? "zstd" : "zlib";
        int refcountBits = 1 << header.refcountOrder;
        if (header.version == 2) {
            return Optional.of(new FormatSpecific.Qcow2("0.10", compression, null,
                    refcountBits, null, null, null));
        }
        List<FormatSpecific.Qcow2Bitmap> b = bitmaps.info();
        return Optional.of(new FormatSpecific.Qcow2("1.1", compression,
                (header.compatible & Qcow2Header.COMPAT_LAZY_REFCOUNTS) != 0, refcountBits,
                (header.incompatible & Qcow2Header.INCOMPAT_CORRUPT) != 0,
                (header.incompatible & Qcow2Header.INCOMPAT_EXTL2) != 0, b));
    }

    /** Every qcow2 image has a store; a v2 one refuses new bitmaps with QEMU's text. */
    @Override
    public Optional<jblockd.block.bitmap.PersistentBitmapStore> persistentBitmaps() {
        return Optional.of(bitmaps);
    }

    /** The image's qcow2 version (2 or 3). */
    public int version() {
        return header.version;
    }
}
