package jblockd.block.qcow2;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

import jblockd.block.Errno;
import jblockd.block.IoError;
import jblockd.block.SnapshotInfo;

/**
 * A read-only view of the qcow2 table that queries list but jblockd never changes: the internal
 * snapshot table (docs/interop/qcow2.txt "Snapshots"). Every length is checked against QEMU's
 * limits and the file before anything is allocated. (Persistent bitmaps: {@link Qcow2Bitmaps}.)
 */
final class ImageTables {
    /** QEMU's QCOW_MAX_SNAPSHOTS_SIZE (block/qcow2.h): the whole table at most 64 MiB. */
    private static final long MAX_SNAPSHOT_TABLE = 64L << 20;
    private static final int SNAPSHOT_FIXED = 40;
    /** QEMU's QCOW_MAX_SNAPSHOT_EXTRA_DATA. */
    private static final int MAX_SNAPSHOT_EXTRA = 1024;

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

    private static String string(ByteBuffer b, int pos, int len) {
        byte[] s = new byte[len];
        b.get(pos, s);
        return new String(s, StandardCharsets.UTF_8);
    }
}
