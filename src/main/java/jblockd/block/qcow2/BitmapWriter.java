package jblockd.block.qcow2;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.BitSet;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.logging.Logger;

import jblockd.block.IoError;
import jblockd.block.bitmap.StoredBitmap;
import jblockd.block.qcow2.BitmapFormat.Entry;

/**
 * Writes persistent bitmaps into an image the way QEMU 7.2's qcow2-bitmap.c does (store_bitmap,
 * bitmap_list_store, update_ext_header_and_dir): new clusters for data, tables and directory,
 * durable before the header points at them; the old ones freed only after the header stopped
 * pointing at them. Every {@code fresh} list collects {offset, bytes} of what an operation
 * allocated, so that a failure before the header switch can give it back.
 */
final class BitmapWriter {
    private static final Logger LOG = Logger.getLogger(Qcow2Bitmaps.class.getName());

    private final Metadata meta;
    private final HostFile file;
    private final Qcow2Header header;
    private final int clusterSize;
    private final long size;
    private final String image;

    BitmapWriter(Metadata meta, String image) {
        this.meta = meta;
        this.file = meta.file;
        this.header = meta.header;
        this.clusterSize = meta.clusterSize;
        this.size = meta.header.size;
        this.image = image;
    }

    /** Gives back what a failed operation allocated. Caller holds the metadata lock. */
    void freeFresh(List<long[]> fresh) {
        for (long[] f : fresh) {
            meta.freeClusters(f[0], f[1], false);
        }
    }

    /**
     * store_bitmap(): one data cluster per non-zero cluster of bits, then the table. Caller
     * holds the metadata lock; what it allocates is added to {@code fresh}.
     */
    Entry writeBitmap(StoredBitmap b, List<long[]> fresh) throws IOException {
        int gb = Long.numberOfTrailingZeros(b.granularity());
        long granules = BitmapFormat.granules(size, b.granularity());
        int n = (int) BitmapFormat.tableSize(size, b.granularity(), clusterSize);
        long bitsPerCluster = (long) clusterSize * 8;
        long[] table = new long[n];
        BitSet bits = b.bits();
        for (int i = 0; i < n; i++) {
            long from = i * bitsPerCluster;
            long to = Math.min(granules, from + bitsPerCluster);
            int next = bits.nextSetBit((int) from);
            if (next < 0 || next >= to) {
                continue;
            }
            long off = meta.allocClusters(1);
            fresh.add(new long[] {off, clusterSize});
            file.write(off, ByteBuffer.wrap(clusterOf(bits, from, to)));
            table[i] = off;
        }
        long tableOffset = allocBytes((long) n * 8, fresh);
        ByteBuffer tb = ByteBuffer.allocate(n * 8);
        tb.asLongBuffer().put(table);
        file.write(tableOffset, tb);
        return new Entry(tableOffset, n, b.enabled() ? BitmapFormat.FLAG_AUTO : 0, gb, b.name());
    }

    /** Bits {@code [from, to)} as one cluster of bitmap data, zero-padded. */
    private byte[] clusterOf(BitSet bits, long from, long to) {
        byte[] out = new byte[clusterSize];
        byte[] b = bits.get((int) from, (int) to).toByteArray();
        System.arraycopy(b, 0, out, 0, Math.min(b.length, clusterSize));
        return out;
    }

    long allocBytes(long bytes, List<long[]> fresh) throws IOException {
        long off = meta.allocClusters((bytes + clusterSize - 1) / clusterSize);
        fresh.add(new long[] {off, bytes});
        return off;
    }

    /**
     * The first half of update_ext_header_and_dir(): writes {@code next} as a new directory
     * (null when empty: no directory) and makes it and everything in {@code fresh} durable; on
     * failure {@code fresh} is freed. Caller holds the metadata lock.
     */
    BitmapFormat.Extension writeDirectory(List<Entry> next, List<long[]> fresh) throws IOException {
        try {
            BitmapFormat.Extension x = null;
            if (!next.isEmpty()) {
                byte[] dir = BitmapFormat.serialize(next);
                long off = allocBytes(dir.length, fresh);
                file.write(off, ByteBuffer.wrap(dir));
                x = new BitmapFormat.Extension(next.size(), dir.length, off);
            }
            meta.flushMetadata();
            return x;
        } catch (IOException | RuntimeException e) {
            freeFresh(fresh);
            throw e;
        }
    }

    /**
     * The second half: points the header at directory {@code x} ({@code next}) with the crash
     * record for {@code tracked}, durably; true when the record is armed. On failure nothing is
     * freed (the header on disk may point at the new clusters: they leak at worst) and the old
     * header is restored and written back, with the record off (best effort; both headers are
     * valid). Caller holds the metadata lock.
     */
    boolean switchHeader(BitmapFormat.Extension x, List<Entry> next, List<IntentRecord.Tracked> tracked)
            throws IOException {
        byte[] oldBitmaps = header.extension(Qcow2Header.EXT_BITMAPS);
        byte[] oldIntent = header.extension(Qcow2Header.EXT_JBLOCKD_INTENT);
        long oldAutoclear = header.autoclear;
        byte[] before = header.serialize();
        boolean armed = setHeader(x, next, tracked);
        if (java.util.Arrays.equals(before, header.serialize())) {
            return armed; // nothing changed (a sync that only wrote bits): no header write
        }
        try {
            meta.writeHeader();
            file.flush();
        } catch (IOException | RuntimeException e) {
            header.setExtension(Qcow2Header.EXT_BITMAPS, oldBitmaps);
            header.setExtension(Qcow2Header.EXT_JBLOCKD_INTENT, oldIntent);
            header.autoclear = oldAutoclear & ~Qcow2Header.AUTOCLEAR_JBLOCKD_INTENT;
            try {
                meta.writeHeader();
                file.flush();
            } catch (IOException | RuntimeException again) {
                e.addSuppressed(again);
            }
            throw e;
        }
        return armed;
    }

    /**
     * The header fields for directory {@code x} ({@code next}): the bitmaps extension and bit 0,
     * and the crash record for {@code tracked} (marker and extension; none when empty, or when it
     * would not fit into cluster 0, which is then logged).
     */
    private boolean setHeader(BitmapFormat.Extension x, List<Entry> next, List<IntentRecord.Tracked> tracked) {
        header.setExtension(Qcow2Header.EXT_BITMAPS, x == null ? null : x.encode());
        header.autoclear = x == null ? 0 : Qcow2Header.AUTOCLEAR_BITMAPS;
        header.setExtension(Qcow2Header.EXT_JBLOCKD_INTENT, null);
        if (x == null || tracked.isEmpty()) {
            return false;
        }
        Set<String> names = new HashSet<>();
        tracked.forEach(t -> names.add(t.name));
        BitSet mask = new BitSet();
        for (int i = 0; i < next.size(); i++) {
            if (names.contains(next.get(i).name())) {
                mask.set(i);
            }
        }
        header.setExtension(Qcow2Header.EXT_JBLOCKD_INTENT,
                new IntentRecord.Extension(x.count(), x.directoryOffset(), x.directorySize(), mask).encode());
        try {
            header.serialize();
            header.autoclear |= Qcow2Header.AUTOCLEAR_JBLOCKD_INTENT;
            return true;
        } catch (IoError tooBig) {
            header.setExtension(Qcow2Header.EXT_JBLOCKD_INTENT, null);
            LOG.warning(image + ": bitmaps: the write-intent record does not fit into cluster 0; "
                    + "a crash leaves the bitmaps inconsistent");
            return false;
        }
    }

    /**
     * Frees, after the header no longer points at them, the old directory, the tables of
     * {@code entries} and the data clusters in {@code data} (QEMU discards freed bitmap data, not
     * tables or directories). Failures only leak. Caller holds the metadata lock.
     */
    void freeAll(BitmapFormat.Extension oldDir, List<Entry> gone, List<long[]> data) {
        if (oldDir != null) {
            meta.freeClusters(oldDir.directoryOffset(), oldDir.directorySize(), false);
        }
        for (long[] clusters : data) {
            for (long c : clusters) {
                long off = c & BitmapFormat.TABLE_OFFSET;
                if (off != 0) {
                    meta.freeClusters(off, clusterSize, true);
                }
            }
        }
        for (Entry e : gone) {
            meta.freeClusters(e.tableOffset(), Integer.toUnsignedLong(e.tableSize()) * 8, false);
        }
    }
}
