package jblockd.block.qcow2;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

import jblockd.block.Errno;
import jblockd.block.FormatSpecific;
import jblockd.block.IoError;
import jblockd.block.SnapshotInfo;

/**
 * Read-only views of the two qcow2 tables that queries list but jblockd never changes: the
 * internal snapshot table and the persistent bitmap directory (docs/interop/qcow2.txt
 * "Snapshots" and "Bitmaps extension"). Every length is checked against QEMU's limits and the
 * file before anything is allocated.
 */
final class ImageTables {
    /** QEMU's QCOW_MAX_SNAPSHOTS_SIZE (block/qcow2.h): the whole table at most 64 MiB. */
    private static final long MAX_SNAPSHOT_TABLE = 64L << 20;
    /** QEMU's QCOW2_MAX_BITMAPS / QCOW2_MAX_BITMAP_DIRECTORY_SIZE (block/qcow2.h). */
    private static final int MAX_BITMAPS = 65535;
    private static final long MAX_BITMAP_DIRECTORY = 1024L * MAX_BITMAPS;
    private static final long AUTOCLEAR_BITMAPS = 1;
    private static final int SNAPSHOT_FIXED = 40;
    /** QEMU's QCOW_MAX_SNAPSHOT_EXTRA_DATA. */
    private static final int MAX_SNAPSHOT_EXTRA = 1024;
    private static final int BITMAP_ENTRY_FIXED = 24;
    private static final int BITMAP_IN_USE = 1;
    private static final int BITMAP_AUTO = 2;

    private ImageTables() {
    }

    /** The snapshot table in table order (qcow2_read_snapshots()); empty without snapshots. */
    static List<SnapshotInfo> snapshots(HostFile file, Qcow2Header h) throws IOException {
        if (h.nbSnapshots <= 0) {
            return List.of();
        }
        long fileLength = file.length();
        List<SnapshotInfo> out = new ArrayList<>(Math.min(h.nbSnapshots, 1024));
        long pos = h.snapshotsOffset;
        for (int i = 0; i < h.nbSnapshots; i++) {
            ByteBuffer fixed = read(file, pos, SNAPSHOT_FIXED, h.snapshotsOffset, fileLength);
            int idSize = Short.toUnsignedInt(fixed.getShort(12));
            int nameSize = Short.toUnsignedInt(fixed.getShort(14));
            long dateSec = Integer.toUnsignedLong(fixed.getInt(16));
            long dateNsec = Integer.toUnsignedLong(fixed.getInt(20));
            long vmClockNsec = fixed.getLong(24);
            long vmStateSize = Integer.toUnsignedLong(fixed.getInt(32));
            long extraSize = Integer.toUnsignedLong(fixed.getInt(36));
            if (extraSize > MAX_SNAPSHOT_EXTRA) {
                throw new IoError(Errno.EFBIG, "Too much extra metadata in snapshot table entry " + i);
            }
            pos += SNAPSHOT_FIXED;
            ByteBuffer rest = read(file, pos, (int) extraSize + idSize + nameSize, h.snapshotsOffset, fileLength);
            Long icount = null;
            if (extraSize >= 8) {
                vmStateSize = rest.getLong(0); // vm_state_size_large
            }
            if (extraSize >= 24) {
                long ic = rest.getLong(16);
                icount = ic == -1 ? null : ic;
            }
            String id = string(rest, (int) extraSize, idSize);
            String name = string(rest, (int) extraSize + idSize, nameSize);
            pos = (pos + rest.limit() + 7) & ~7L;
            out.add(new SnapshotInfo(id, name, vmStateSize, dateSec, dateNsec, vmClockNsec, icount));
        }
        return List.copyOf(out);
    }

    /** {@code len} bytes at {@code pos}, inside the file and QEMU's bound on the table size. */
    private static ByteBuffer read(HostFile file, long pos, int len, long tableStart, long fileLength)
            throws IOException {
        if (pos < 0 || pos - tableStart + len > MAX_SNAPSHOT_TABLE) {
            throw new IoError(Errno.EFBIG, "Snapshot table too large");
        }
        if (pos > fileLength - len) {
            throw new IoError(Errno.EINVAL, "Snapshot table runs past the end of the image file");
        }
        ByteBuffer b = ByteBuffer.allocate(len).order(ByteOrder.BIG_ENDIAN);
        file.read(pos, b);
        b.flip();
        return b;
    }

    /**
     * The persistent bitmaps (qcow2_get_bitmap_info_list()): only when the bitmaps extension is
     * present and its autoclear bit still set, else there are none (a writer that does not
     * maintain them, jblockd included, clears the bit).
     */
    static List<FormatSpecific.Qcow2Bitmap> bitmaps(HostFile file, Qcow2Header h) throws IOException {
        if ((h.autoclear & AUTOCLEAR_BITMAPS) == 0) {
            return List.of();
        }
        byte[] ext = null;
        for (Qcow2Header.Extension e : h.extensions) {
            if (e.type() == Qcow2Header.EXT_BITMAPS) {
                ext = e.data();
            }
        }
        if (ext == null) {
            return List.of();
        }
        ByteBuffer b = ByteBuffer.wrap(ext).order(ByteOrder.BIG_ENDIAN);
        if (ext.length < 24) {
            throw new IoError(Errno.EINVAL, "qcow2 header: bitmaps extension is too small");
        }
        long count = Integer.toUnsignedLong(b.getInt(0));
        long dirSize = b.getLong(8);
        long dirOffset = b.getLong(16);
        if (count == 0) {
            return List.of();
        }
        if (count > MAX_BITMAPS || dirSize <= 0 || dirSize > MAX_BITMAP_DIRECTORY || dirOffset <= 0
                || dirOffset > file.length() - dirSize) {
            throw new IoError(Errno.EINVAL, "qcow2 header: invalid bitmap directory");
        }
        ByteBuffer dir = ByteBuffer.allocate((int) dirSize).order(ByteOrder.BIG_ENDIAN);
        file.read(dirOffset, dir);
        dir.flip();
        List<FormatSpecific.Qcow2Bitmap> out = new ArrayList<>((int) Math.min(count, 1024));
        int pos = 0;
        for (long i = 0; i < count; i++) {
            need(dir, pos, BITMAP_ENTRY_FIXED, "bitmap directory");
            int flags = dir.getInt(pos + 12);
            int granularityBits = Byte.toUnsignedInt(dir.get(pos + 17));
            int nameSize = Short.toUnsignedInt(dir.getShort(pos + 18));
            long extraSize = Integer.toUnsignedLong(dir.getInt(pos + 20));
            if (granularityBits > 63) {
                throw new IoError(Errno.EINVAL, "qcow2: bitmap granularity out of range");
            }
            pos += BITMAP_ENTRY_FIXED;
            need(dir, pos, extraSize + nameSize, "bitmap directory");
            pos += (int) extraSize;
            String name = string(dir, pos, nameSize);
            pos += nameSize;
            pos = (pos + 7) & ~7;
            List<String> names = new ArrayList<>(2);
            if ((flags & BITMAP_IN_USE) != 0) {
                names.add("in-use");
            }
            if ((flags & BITMAP_AUTO) != 0) {
                names.add("auto");
            }
            out.add(new FormatSpecific.Qcow2Bitmap(name, 1L << granularityBits, names));
        }
        return List.copyOf(out);
    }

    private static void need(ByteBuffer b, int pos, long bytes, String what) throws IoError {
        if (bytes > b.limit() - (long) pos) {
            throw new IoError(Errno.EINVAL, "qcow2: " + what + " runs past its end");
        }
    }

    private static String string(ByteBuffer b, int pos, int len) {
        byte[] s = new byte[len];
        b.get(pos, s);
        return new String(s, StandardCharsets.UTF_8);
    }
}
