package jblockd.block.qcow2;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.List;
import java.util.concurrent.atomic.AtomicIntegerArray;
import java.util.concurrent.atomic.AtomicLongArray;

/**
 * jblockd's write-intent record for persistent bitmaps (docs/qcow2-bitmaps.md, issue 13 point
 * 5), the md/RAID write-intent-bitmap idea in QEMU's own structures: every tracked bitmap keeps
 * a fully allocated table and data clusters while the image is open read-write, and before a
 * request changes data in a region whose bits are not all set on disk, that region's bits are
 * set there (one 512-byte sector of bitmap data, all ones) and flushed. So the bitmap data on
 * disk always holds every granule a request may have changed, and {@link #writeLayout} later
 * replaces coarse sectors by the fine bits, lazily: a sector goes back to fine bits only once no
 * request touched its region for a whole interval between two syncs.
 * <p>
 * A mark covers what one sector of bitmap data covers: 4096 granules, 256 MiB of guest at the
 * default 64 KiB granularity, 2 MiB at 512 bytes. A sector is what a disk writes atomically, so a
 * mark is one write that cannot tear, and it never has to merge with its neighbours' bits.
 * <p>
 * Thread-safety: {@link #stamp} and {@link #covered} are lock-free (the data path); everything
 * else runs under the store's lock ({@link Qcow2Bitmaps}).
 */
final class IntentRecord {
    static final int SECTOR = 512;
    /** Granules (bits) per sector of bitmap data. */
    static final int SECTOR_BITS = SECTOR * 8;
    /** Stamps cover 2 MiB of guest each (a sector at the finest granularity), fewer for huge images. */
    private static final int MIN_UNIT_SHIFT = 21;
    private static final long MAX_UNITS = 1L << 20;
    private static final int EXT_FIXED = 24;
    private static final int EXT_VERSION = 1;

    private final HostFile file;
    private final int clusterSize;
    private final long imageSize;
    private final int unitShift;
    /**
     * Per unit of guest, the last epoch a data-changing request touched it. A sync closes the
     * epoch; a stamp at or after the closing one means "touched since the previous sync".
     */
    private final AtomicIntegerArray stamps;
    private volatile int epoch = 1;
    /** Ranges of requests waiting for the lock to be marked ({@link #announce}). */
    private final java.util.concurrent.ConcurrentLinkedQueue<long[]> pending =
            new java.util.concurrent.ConcurrentLinkedQueue<>();
    /** The tracked bitmaps, replaced whole under the store's lock; empty while not armed. */
    private volatile List<Tracked> tracked = List.of();

    /** One tracked bitmap: its data clusters and which sectors of them are all ones on disk. */
    static final class Tracked {
        final String name;
        final int granularityBits;
        final long granules;
        final boolean recording;
        final long tableOffset;
        /** Data cluster offsets, one per table entry, all allocated. */
        final long[] clusters;
        /** Bit s: sector s of the data is all ones on disk, durably. */
        final AtomicLongArray marked;
        final int sectors;
        /** The bits last written into the sectors that are not marked. Guarded by the store's lock. */
        BitSet fine;

        Tracked(String name, int granularityBits, long granules, boolean recording, long tableOffset,
                long[] clusters, AtomicLongArray marked, BitSet fine) {
            this.name = name;
            this.granularityBits = granularityBits;
            this.granules = granules;
            this.recording = recording;
            this.tableOffset = tableOffset;
            this.clusters = clusters;
            this.sectors = (int) ((granules + SECTOR_BITS - 1) / SECTOR_BITS);
            this.marked = marked != null ? marked : new AtomicLongArray((sectors + 63) / 64);
            this.fine = fine;
        }

        Tracked withRecording(boolean r) {
            return new Tracked(name, granularityBits, granules, r, tableOffset, clusters, marked, fine);
        }

        boolean isMarked(int s) {
            return (marked.get(s >>> 6) & (1L << s)) != 0;
        }

        void setMarked(int s, boolean on) {
            long bit = 1L << s;
            if (on) {
                marked.getAndAccumulate(s >>> 6, bit, (a, b) -> a | b);
            } else {
                marked.getAndAccumulate(s >>> 6, ~bit, (a, b) -> a & b);
            }
        }

        /** Sectors {@code [first, last]} that guest bytes {@code [off, off+len)} fall into. */
        int firstSector(long off) {
            return (int) (Math.min(granules - 1, off >>> granularityBits) / SECTOR_BITS);
        }

        int lastSector(long off, long len) {
            return (int) (Math.min(granules - 1, (off + len - 1) >>> granularityBits) / SECTOR_BITS);
        }

        /** Host offset of sector {@code s} of the data. */
        long sectorOffset(int s, int clusterSize) {
            long byteInData = (long) s * SECTOR;
            return clusters[(int) (byteInData / clusterSize)] + byteInData % clusterSize;
        }
    }

    IntentRecord(HostFile file, int clusterSize, long imageSize) {
        this.file = file;
        this.clusterSize = clusterSize;
        this.imageSize = imageSize;
        int shift = MIN_UNIT_SHIFT;
        while ((imageSize >>> shift) >= MAX_UNITS) {
            shift++;
        }
        this.unitShift = shift;
        this.stamps = new AtomicIntegerArray((int) Math.max(1, (imageSize + (1L << shift) - 1) >>> shift));
    }

    List<Tracked> tracked() {
        return tracked;
    }

    void setTracked(List<Tracked> t) {
        tracked = List.copyOf(t);
    }

    boolean armed() {
        return !tracked.isEmpty();
    }

    // ------------------------------------------------------------------ the data path

    /** Records that a request is about to change guest bytes {@code [off, off+len)}. Lock-free. */
    void stamp(long off, long len) {
        int e = epoch;
        long last = Math.min(stamps.length() - 1L, (off + len - 1) >>> unitShift);
        for (long u = off >>> unitShift; u <= last; u++) {
            // Only ever raised: a late request with an older epoch must not hide a newer stamp.
            if (stamps.get((int) u) < e) {
                stamps.accumulateAndGet((int) u, e, Math::max);
            }
        }
    }

    /** True when every recording bitmap already has the range's bits set on disk. Lock-free. */
    boolean covered(long off, long len) {
        for (Tracked t : tracked) {
            if (!t.recording) {
                continue;
            }
            for (int s = t.firstSector(off), end = t.lastSector(off, len); s <= end; s++) {
                if (!t.isMarked(s)) {
                    return false;
                }
            }
        }
        return true;
    }

    /**
     * Announces a request that needs a mark, before it waits for the lock: whoever holds the
     * lock next marks every announced range with one flush (group commit), so requests that
     * arrive together at fresh regions pay one flush, not one each. Lock-free.
     */
    void announce(long off, long len) {
        pending.add(new long[] {off, len});
    }

    void dropAnnounced() {
        pending.clear();
    }

    /**
     * Sets on disk, durably, every sector of the recording bitmaps that {@code [off, off+len)}
     * or an announced range falls into and that is not all ones yet: the write-intent mark.
     * Caller holds the lock.
     */
    void mark(long off, long len) throws IOException {
        List<long[]> ranges = new ArrayList<>();
        ranges.add(new long[] {off, len});
        for (long[] r; (r = pending.poll()) != null; ) {
            ranges.add(r);
        }
        List<Tracked> todo = new ArrayList<>();
        List<Integer> todoSectors = new ArrayList<>();
        java.util.Set<Long> seen = new java.util.HashSet<>();
        for (Tracked t : tracked) {
            if (!t.recording) {
                continue;
            }
            for (long[] r : ranges) {
                for (int s = t.firstSector(r[0]), end = t.lastSector(r[0], r[1]); s <= end; s++) {
                    if (!t.isMarked(s) && seen.add(t.sectorOffset(s, clusterSize))) {
                        file.write(t.sectorOffset(s, clusterSize), ByteBuffer.wrap(sector(t, s, null)));
                        todo.add(t);
                        todoSectors.add(s);
                    }
                }
            }
        }
        if (todo.isEmpty()) {
            return;
        }
        file.flush(); // the marks durable before the request may change data
        for (int i = 0; i < todo.size(); i++) {
            todo.get(i).setMarked(todoSectors.get(i), true);
        }
    }

    // ------------------------------------------------------------------ syncs

    /** Closes the current epoch and returns it: stamps at or after it were made since the last sync. */
    int closeEpoch() {
        int closing = epoch;
        epoch = closing + 1;
        return closing;
    }

    /** True when a request touched any unit of guest bytes {@code [from, to)} at or after epoch {@code since}. */
    private boolean touchedSince(long from, long to, int since) {
        long last = Math.min(stamps.length() - 1L, (Math.min(to, imageSize) - 1) >>> unitShift);
        for (long u = from >>> unitShift; u <= last; u++) {
            if (stamps.get((int) u) >= since) {
                return true;
            }
        }
        return false;
    }

    /**
     * Brings the data of {@code t} to {@code bits}, except for the sectors a request may be
     * changing: of a recording bitmap, every sector touched since epoch {@code since} is (or
     * stays) all ones, so a request that passed before this sync and whose bits {@code bits} may
     * not hold yet stays covered. {@code fresh}: the clusters hold garbage, write them whole.
     * Writes only. Returns true when a sector gained bits on disk: the caller must flush before
     * the sync returns (the caller vouches for them); sectors that only lost bits need no flush,
     * since their old and new contents both hold every request. Caller holds the lock.
     */
    boolean writeLayout(Tracked t, BitSet bits, int since, boolean fresh) throws IOException {
        boolean raised = fresh;
        // Requests wait for the sync (the store's gate) except those that had passed it: their
        // stamps are visible here, so a sector they touched stays all ones. Marks set here are
        // durable before the gate opens (the caller flushes first).
        int sectorsPerCluster = clusterSize / SECTOR;
        for (int c = 0; c < t.clusters.length; c++) {
            byte[] cluster = fresh ? new byte[clusterSize] : null;
            for (int k = 0; k < sectorsPerCluster; k++) {
                int s = c * sectorsPerCluster + k;
                if (s >= t.sectors) {
                    break;
                }
                long from = ((long) s * SECTOR_BITS) << t.granularityBits;
                long to = from + ((long) SECTOR_BITS << t.granularityBits);
                boolean ones = (t.recording || t.isMarked(s)) && touchedSince(from, to, since);
                byte[] want = sector(t, s, ones ? null : bits);
                if (cluster != null) {
                    System.arraycopy(want, 0, cluster, k * SECTOR, SECTOR);
                } else {
                    byte[] had = t.isMarked(s) ? null : sector(t, s, t.fine);
                    if (had == null ? !ones : !Arrays.equals(want, had)) {
                        file.write(t.sectorOffset(s, clusterSize), ByteBuffer.wrap(want));
                        raised |= had != null && gains(want, had);
                    }
                }
                t.setMarked(s, ones);
            }
            if (cluster != null) {
                file.write(t.clusters[c], ByteBuffer.wrap(cluster));
            }
        }
        t.fine = (BitSet) bits.clone();
        return raised;
    }

    /** True when {@code now} has a bit set that {@code before} has not. */
    private static boolean gains(byte[] now, byte[] before) {
        for (int i = 0; i < now.length; i++) {
            if ((now[i] & ~before[i]) != 0) {
                return true;
            }
        }
        return false;
    }

    /** Sector {@code s} of {@code t}'s data: the fine bits of {@code bits}, or all ones when null. */
    private static byte[] sector(Tracked t, int s, BitSet bits) {
        byte[] out = new byte[SECTOR];
        long first = (long) s * SECTOR_BITS;
        int valid = (int) Math.min(SECTOR_BITS, t.granules - first);
        if (valid <= 0) {
            return out;
        }
        if (bits == null) {
            Arrays.fill(out, 0, valid / 8, (byte) 0xff);
            if (valid % 8 != 0) {
                out[valid / 8] = (byte) ((1 << (valid % 8)) - 1);
            }
            return out;
        }
        if (first > Integer.MAX_VALUE) {
            return out;
        }
        byte[] b = bits.get((int) first, (int) Math.min(Integer.MAX_VALUE, first + valid)).toByteArray();
        System.arraycopy(b, 0, out, 0, Math.min(b.length, SECTOR));
        return out;
    }

    // ------------------------------------------------------------------ the header extension

    /**
     * Which directory entries the record vouches for, bound to one directory:
     * <pre>
     *  0 version u32 (1) | 4 nb_bitmaps u32 | 8 bitmap_directory_offset u64 | 16 bitmap_directory_size u64
     * 24 tracked: ceil(nb_bitmaps / 8) bytes, bit i (byte i/8, LSB first) = directory entry i
     * </pre>
     * It counts only with autoclear bit 63 set and when the three binding fields equal the
     * bitmaps extension's.
     */
    record Extension(int count, long directoryOffset, long directorySize, BitSet entries) {
        byte[] encode() {
            ByteBuffer b = ByteBuffer.allocate(EXT_FIXED + (count + 7) / 8);
            b.putInt(0, EXT_VERSION).putInt(4, count).putLong(8, directoryOffset).putLong(16, directorySize);
            byte[] mask = entries.toByteArray();
            b.put(EXT_FIXED, mask, 0, Math.min(mask.length, (count + 7) / 8));
            return b.array();
        }

        /** The record, or null when it is malformed (then it vouches for nothing). */
        static Extension decode(byte[] data) {
            if (data == null || data.length < EXT_FIXED) {
                return null;
            }
            ByteBuffer b = ByteBuffer.wrap(data);
            int count = b.getInt(4);
            if (b.getInt(0) != EXT_VERSION || count < 0 || count > BitmapFormat.MAX_BITMAPS
                    || data.length != EXT_FIXED + (count + 7) / 8) {
                return null;
            }
            BitSet mask = BitSet.valueOf(Arrays.copyOfRange(data, EXT_FIXED, data.length));
            return new Extension(count, b.getLong(8), b.getLong(16), mask);
        }

        boolean boundTo(BitmapFormat.Extension e) {
            return e != null && e.count() == count && e.directoryOffset() == directoryOffset
                    && e.directorySize() == directorySize;
        }
    }
}
