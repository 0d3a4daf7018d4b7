package jblockd.block.qcow2;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

import jblockd.block.Errno;
import jblockd.block.IoError;

/**
 * The on-disk form of qcow2 persistent dirty bitmaps (docs/interop/qcow2.txt "Bitmaps",
 * bitmaps.md §7), parsed and checked as QEMU 7.2 does (qcow2.c qcow2_read_extensions,
 * qcow2-bitmap.c bitmap_list_load, check_dir_entry, check_table_entry), with QEMU's texts, and
 * written as QEMU writes it (bitmap_list_store). All fields big-endian.
 * <pre>
 * header extension 0x23852875 (24 bytes):
 *   0 nb_bitmaps u32 | 4 reserved u32 (0) | 8 bitmap_directory_size u64 | 16 bitmap_directory_offset u64
 * directory entry (padded with zeroes to a multiple of 8):
 *   0 bitmap_table_offset u64 | 8 bitmap_table_size u32 (entries) | 12 flags u32 (0 in_use, 1 auto)
 *  16 type u8 (1) | 17 granularity_bits u8 | 18 name_size u16 | 20 extra_data_size u32 | 24 extra data | name
 * bitmap table entry u64: bits 9-55 the offset of a data cluster; offset 0: bit 0 set = all ones, else zeroes
 * bitmap data: bit n = byte n/8, bit n%8 (LSB first), covering guest bytes [n*granularity, (n+1)*granularity)
 * </pre>
 */
final class BitmapFormat {
    /** QEMU's QCOW2_MAX_BITMAPS, QCOW2_MAX_BITMAP_DIRECTORY_SIZE (block/qcow2.h). */
    static final int MAX_BITMAPS = 65535;
    static final long MAX_DIRECTORY_SIZE = 1024L * MAX_BITMAPS;
    /** qcow2-bitmap.c's BME_* constraints. */
    static final int MAX_NAME_SIZE = 1023;
    static final int MIN_GRANULARITY_BITS = 9;
    static final int MAX_GRANULARITY_BITS = 31;
    static final long MAX_TABLE_SIZE = 0x8000000L;
    static final long MAX_PHYS_SIZE = 0x20000000L;
    static final int FLAG_IN_USE = 1;
    static final int FLAG_AUTO = 2;
    private static final int RESERVED_FLAGS = 0xfffffffc;
    private static final long TABLE_RESERVED = 0xff000000000001feL;
    static final long TABLE_OFFSET = 0x00fffffffffffe00L;
    static final long TABLE_ALL_ONES = 1;
    private static final int TYPE_DIRTY_TRACKING = 1;
    private static final int ENTRY_FIXED = 24;
    static final int EXTENSION_LENGTH = 24;

    private BitmapFormat() {
    }

    /** The bitmaps header extension. */
    record Extension(int count, long directorySize, long directoryOffset) {
        byte[] encode() {
            return ByteBuffer.allocate(EXTENSION_LENGTH).putInt(0, count).putLong(8, directorySize)
                    .putLong(16, directoryOffset).array();
        }

        /** qcow2_read_extensions()'s checks, in its order and with its texts. */
        static Extension decode(byte[] data, int clusterSize) throws IoError {
            if (data.length != EXTENSION_LENGTH) {
                throw new IoError(Errno.EINVAL, "bitmaps_ext: Invalid extension length");
            }
            ByteBuffer b = ByteBuffer.wrap(data);
            if (b.getInt(4) != 0) {
                throw new IoError(Errno.EINVAL, "bitmaps_ext: Reserved field is not zero");
            }
            long count = Integer.toUnsignedLong(b.getInt(0));
            long size = b.getLong(8);
            long offset = b.getLong(16);
            if (count > MAX_BITMAPS) {
                throw new IoError(Errno.EINVAL, "bitmaps_ext: Image has " + count
                        + " bitmaps, exceeding the QEMU supported maximum of " + MAX_BITMAPS);
            }
            if (count == 0) {
                throw new IoError(Errno.EINVAL, "found bitmaps extension with zero bitmaps");
            }
            if ((offset & (clusterSize - 1)) != 0) {
                throw new IoError(Errno.EINVAL, "bitmaps_ext: invalid bitmap directory offset");
            }
            if (Long.compareUnsigned(size, MAX_DIRECTORY_SIZE) > 0) {
                throw new IoError(Errno.EINVAL, "bitmaps_ext: bitmap directory size (" + Long.toUnsignedString(size)
                        + ") exceeds the maximum supported size (" + MAX_DIRECTORY_SIZE + ")");
            }
            return new Extension((int) count, size, offset);
        }
    }

    /** One directory entry; {@code name} is at most {@link #MAX_NAME_SIZE} bytes of UTF-8. */
    record Entry(long tableOffset, int tableSize, int flags, int granularityBits, String name) {
        boolean inUse() {
            return (flags & FLAG_IN_USE) != 0;
        }

        boolean auto() {
            return (flags & FLAG_AUTO) != 0;
        }

        long granularity() {
            return 1L << granularityBits;
        }

        Entry withFlags(int newFlags) {
            return new Entry(tableOffset, tableSize, newFlags, granularityBits, name);
        }

        int size() {
            return entrySize(nameBytes(name));
        }
    }

    static int nameBytes(String name) {
        return name.getBytes(StandardCharsets.UTF_8).length;
    }

    /** calc_dir_entry_size() without extra data. */
    static int entrySize(int nameBytes) {
        return (ENTRY_FIXED + nameBytes + 7) & ~7;
    }

    static long directorySize(List<Entry> entries) {
        long n = 0;
        for (Entry e : entries) {
            n += e.size();
        }
        return n;
    }

    /** Bytes of bitmap data for {@code imageSize} at {@code granularity}: one bit per granule. */
    static long dataBytes(long imageSize, long granularity) {
        long granules = granules(imageSize, granularity);
        return (granules + 7) / 8;
    }

    static long granules(long imageSize, long granularity) {
        return (imageSize + granularity - 1) / granularity;
    }

    /** Entries of the bitmap table: one per cluster of data (QEMU rounds to 8-byte words first, same count). */
    static long tableSize(long imageSize, long granularity, int clusterSize) {
        long words = (granules(imageSize, granularity) + 63) / 64;
        return (words * 8 + clusterSize - 1) / clusterSize;
    }

    /**
     * check_constraints_on_bitmap(): the reason a bitmap of this name and granularity cannot be
     * stored in an image of {@code imageSize}, or null.
     */
    static String constraintViolation(String name, long granularity, long imageSize, int clusterSize) {
        int bits = Long.numberOfTrailingZeros(granularity);
        if (bits > MAX_GRANULARITY_BITS) {
            return "Granularity exceeds maximum (" + (1L << MAX_GRANULARITY_BITS) + " bytes)";
        }
        if (bits < MIN_GRANULARITY_BITS) {
            return "Granularity is under minimum (" + (1L << MIN_GRANULARITY_BITS) + " bytes)";
        }
        long bytes = (granules(imageSize, granularity) + 63) / 64 * 8;
        if (bytes > MAX_PHYS_SIZE || bytes > MAX_TABLE_SIZE * clusterSize) {
            return "Too much space will be occupied by the bitmap. Use larger granularity";
        }
        if (nameBytes(name) > MAX_NAME_SIZE) {
            return "Name length exceeds maximum (" + MAX_NAME_SIZE + " characters)";
        }
        return null;
    }

    /** check_dir_entry(). */
    static boolean entryValid(Entry e, int clusterSize, long imageSize) {
        long tableSize = Integer.toUnsignedLong(e.tableSize);
        if (tableSize == 0 || e.tableOffset == 0 || e.tableOffset % clusterSize != 0 || tableSize > MAX_TABLE_SIZE
                || e.granularityBits > MAX_GRANULARITY_BITS || e.granularityBits < MIN_GRANULARITY_BITS
                || (e.flags & RESERVED_FLAGS) != 0 || nameBytes(e.name) > MAX_NAME_SIZE) {
            return false;
        }
        long phys = tableSize * clusterSize;
        if (phys > MAX_PHYS_SIZE) {
            return false;
        }
        if (!e.inUse()) {
            // A valid bitmap's table must cover the image (an in_use one may be stale, e.g. after a resize).
            long bits = phys * 8;
            boolean huge = Long.numberOfLeadingZeros(bits) <= e.granularityBits;
            if (!huge && imageSize > bits << e.granularityBits) {
                return false;
            }
        }
        return true;
    }

    /** check_table_entry(). */
    static boolean tableEntryValid(long entry, int clusterSize) {
        if ((entry & TABLE_RESERVED) != 0) {
            return false;
        }
        long offset = entry & TABLE_OFFSET;
        return offset == 0 || ((entry & TABLE_ALL_ONES) == 0 && offset % clusterSize == 0);
    }

    /**
     * bitmap_list_load(): the {@code count} entries of {@code dir}, each checked. The texts are
     * QEMU's; a constraint violation names the bitmap.
     */
    static List<Entry> parse(byte[] dir, int count, int clusterSize, long imageSize) throws IoError {
        ByteBuffer b = ByteBuffer.wrap(dir);
        List<Entry> out = new ArrayList<>(Math.min(count, 1024));
        int pos = 0;
        while (pos < dir.length) {
            if (dir.length - pos < ENTRY_FIXED) {
                throw new IoError(Errno.EINVAL, "Broken bitmap directory");
            }
            if (out.size() + 1 > count) {
                throw new IoError(Errno.EINVAL, "More bitmaps found than specified in header extension");
            }
            long tableOffset = b.getLong(pos);
            int tableSize = b.getInt(pos + 8);
            int flags = b.getInt(pos + 12);
            int type = Byte.toUnsignedInt(b.get(pos + 16));
            int granularityBits = Byte.toUnsignedInt(b.get(pos + 17));
            int nameSize = Short.toUnsignedInt(b.getShort(pos + 18));
            long extra = Integer.toUnsignedLong(b.getInt(pos + 20));
            long size = (ENTRY_FIXED + extra + nameSize + 7) & ~7L;
            if (size > dir.length - pos) {
                throw new IoError(Errno.EINVAL, "Broken bitmap directory");
            }
            if (extra != 0) {
                throw new IoError(Errno.EINVAL, "Bitmap extra data is not supported");
            }
            String name = new String(dir, pos + ENTRY_FIXED, nameSize, StandardCharsets.UTF_8);
            Entry e = new Entry(tableOffset, tableSize, flags, granularityBits, name);
            if (type != TYPE_DIRTY_TRACKING || !entryValid(e, clusterSize, imageSize)) {
                throw new IoError(Errno.EINVAL, "Bitmap '" + name + "' doesn't satisfy the constraints");
            }
            out.add(e);
            pos += (int) size;
        }
        if (out.size() != count) {
            throw new IoError(Errno.EINVAL, "Less bitmaps found than specified in header extension");
        }
        return List.copyOf(out);
    }

    /** bitmap_list_store()'s directory bytes (no extra data, zero padding). */
    static byte[] serialize(List<Entry> entries) {
        ByteBuffer b = ByteBuffer.allocate((int) directorySize(entries));
        int pos = 0;
        for (Entry e : entries) {
            byte[] name = e.name.getBytes(StandardCharsets.UTF_8);
            b.putLong(pos, e.tableOffset).putInt(pos + 8, e.tableSize).putInt(pos + 12, e.flags)
                    .put(pos + 16, (byte) TYPE_DIRTY_TRACKING).put(pos + 17, (byte) e.granularityBits)
                    .putShort(pos + 18, (short) name.length).putInt(pos + 20, 0).put(pos + ENTRY_FIXED, name);
            pos += e.size();
        }
        return b.array();
    }
}
