package jblockd.block.qcow2;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.BitSet;

import jblockd.block.Errno;
import jblockd.block.IoError;
import jblockd.block.qcow2.BitmapFormat.Entry;

/**
 * Reads persistent bitmaps from an image file (qcow2-bitmap.c bitmap_table_load,
 * load_bitmap_data) with QEMU's checks and texts; beyond QEMU, a directory, table or data
 * cluster outside the file is an error (QEMU reads zeroes there and loads a wrong bitmap).
 */
final class BitmapReader {
    private BitmapReader() {
    }

    /** The directory bytes; a directory outside the file is an error. */
    static byte[] readDirectory(HostFile file, BitmapFormat.Extension x) throws IOException {
        if (x.directorySize() == 0) {
            throw new IoError(Errno.EINVAL, "Requested bitmap directory size is zero");
        }
        if (x.directoryOffset() == 0 || x.directoryOffset() > file.length() - x.directorySize()) {
            // QEMU reads zeroes past the end of the file; an error names what is wrong instead
            throw new IoError(Errno.EINVAL, "Bitmap directory at 0x" + Long.toHexString(x.directoryOffset())
                    + " is past the end of the image file");
        }
        byte[] dir = new byte[(int) x.directorySize()];
        file.read(x.directoryOffset(), ByteBuffer.wrap(dir));
        return dir;
    }

    /** bitmap_table_load(): the table, each entry checked; EINVAL with QEMU's text. */
    static long[] readTable(HostFile file, int clusterSize, Entry e) throws IOException {
        long n = Integer.toUnsignedLong(e.tableSize());
        String what = "Could not read bitmap_table table from image for bitmap '" + e.name() + "': ";
        if (e.tableOffset() > file.length() - n * 8) {
            throw new IoError(Errno.EINVAL, what + "Invalid argument (the table at 0x"
                    + Long.toHexString(e.tableOffset()) + " is past the end of the image file)");
        }
        ByteBuffer b = ByteBuffer.allocate((int) (n * 8));
        file.read(e.tableOffset(), b);
        long[] table = new long[(int) n];
        b.flip();
        b.asLongBuffer().get(table);
        for (long t : table) {
            if (!BitmapFormat.tableEntryValid(t, clusterSize)) {
                throw new IoError(Errno.EINVAL, what + "Invalid argument");
            }
        }
        return table;
    }

    /**
     * load_bitmap_data(): the bits of entry {@code e}; all-zero and all-one table entries read
     * as such, bits past the image's end are dropped. {@code allocatedOnly}: a table entry
     * without a data cluster makes it null (the crash record always allocates every cluster).
     */
    static BitSet readBits(HostFile file, int clusterSize, long size, Entry e, long[] table, boolean allocatedOnly)
            throws IOException {
        String what = "Could not read bitmap '" + e.name() + "' from image: ";
        long granules = BitmapFormat.granules(size, e.granularity());
        if (table.length != BitmapFormat.tableSize(size, e.granularity(), clusterSize)) {
            throw new IoError(Errno.EINVAL, what + "Invalid argument");
        }
        if (granules > Integer.MAX_VALUE) {
            throw new IoError(Errno.EFBIG, what + "jblockd holds at most 2^31 - 1 bits per bitmap; " + granules
                    + " needed");
        }
        long[] words = new long[(int) ((granules + 63) / 64)];
        int wordsPerCluster = clusterSize / 8;
        long fileLength = file.length();
        byte[] buf = new byte[clusterSize];
        for (int i = 0; i < table.length; i++) {
            long off = table[i] & BitmapFormat.TABLE_OFFSET;
            int w0 = i * wordsPerCluster;
            int w1 = Math.min(words.length, w0 + wordsPerCluster);
            if (off == 0) {
                if (allocatedOnly) {
                    return null;
                }
                if ((table[i] & BitmapFormat.TABLE_ALL_ONES) != 0) {
                    java.util.Arrays.fill(words, w0, w1, -1L);
                }
                continue;
            }
            if (off > fileLength - clusterSize) {
                throw new IoError(Errno.EINVAL, what + "Invalid argument (the data cluster at 0x"
                        + Long.toHexString(off) + " is past the end of the image file)");
            }
            file.read(off, ByteBuffer.wrap(buf));
            ByteBuffer.wrap(buf).order(ByteOrder.LITTLE_ENDIAN).asLongBuffer().get(words, w0, w1 - w0);
        }
        BitSet bits = BitSet.valueOf(words);
        bits.clear((int) granules, Math.max((int) granules, words.length * 64));
        return bits;
    }

    /**
     * The bits of an {@code in_use} entry the crash record vouches for, or null (then it is
     * inconsistent after all): its table must be whole and every cluster allocated.
     */
    static BitSet recover(HostFile file, int clusterSize, long size, Entry e) throws IOException {
        if (e.tableSize() != BitmapFormat.tableSize(size, e.granularity(), clusterSize)) {
            return null;
        }
        return readBits(file, clusterSize, size, e, readTable(file, clusterSize, e), true);
    }
}
