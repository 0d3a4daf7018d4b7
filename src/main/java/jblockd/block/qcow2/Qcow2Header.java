package jblockd.block.qcow2;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

import jblockd.block.Errno;
import jblockd.block.IoError;

/**
 * The qcow2 header in cluster 0 (docs/interop/qcow2.txt "Header", formats.md §1-§2), parsed and
 * validated before anything is allocated, and serialised back the way QEMU's
 * qcow2_update_header() lays it out: header, [backing format], other extensions (the feature
 * name table for v3), end marker, backing file name; the rest of cluster 0 zero.
 * <pre>
 *  0 magic "QFI\xfb" | 4 version | 8 backing_file_offset | 16 backing_file_size | 20 cluster_bits
 * 24 size | 32 crypt_method | 36 l1_size | 40 l1_table_offset | 48 refcount_table_offset
 * 56 refcount_table_clusters | 60 nb_snapshots | 64 snapshots_offset          (v2 ends at 72)
 * 72 incompatible | 80 compatible | 88 autoclear | 96 refcount_order | 100 header_length
 * 104 compression_type (+7 padding, header_length 112)
 * </pre>
 * Mutable: the driver changes fields under its metadata lock only.
 */
final class Qcow2Header {
    static final int MAGIC = 0x514649fb;
    static final int V2_LENGTH = 72;
    static final int V3_MIN_LENGTH = 104;
    static final int V3_LENGTH = 112;

    static final int EXT_END = 0;
    static final int EXT_BACKING_FORMAT = 0xe2792aca;
    static final int EXT_FEATURE_TABLE = 0x6803f857;
    static final int EXT_BITMAPS = 0x23852875;
    static final int EXT_CRYPTO = 0x0537be77;
    static final int EXT_DATA_FILE = 0x44415441;
    /**
     * jblockd's write-intent record for persistent bitmaps (docs/qcow2-bitmaps.md): a header
     * extension QEMU does not know, so it keeps it verbatim ("jbwi").
     */
    static final int EXT_JBLOCKD_INTENT = 0x6a627769;

    /** Autoclear bit 0: the bitmaps extension is consistent (qcow2.txt). */
    static final long AUTOCLEAR_BITMAPS = 1;
    /**
     * Autoclear bit 63 (reserved in qcow2.txt), jblockd's own: the write-intent record is valid.
     * Every other writer clears unknown autoclear bits when it opens the image read-write, so
     * the bit survives only while nobody but jblockd wrote the image.
     */
    static final long AUTOCLEAR_JBLOCKD_INTENT = 1L << 63;

    static final long INCOMPAT_DIRTY = 1;
    static final long INCOMPAT_CORRUPT = 2;
    static final long INCOMPAT_DATA_FILE = 4;
    static final long INCOMPAT_COMPRESSION = 8;
    static final long INCOMPAT_EXTL2 = 16;
    static final long INCOMPAT_KNOWN = 31;
    static final long COMPAT_LAZY_REFCOUNTS = 1;

    /** QEMU's QCOW_MAX_L1_SIZE / QCOW_MAX_REFTABLE_SIZE (block/qcow2.h). */
    static final long MAX_L1_BYTES = 32L << 20;
    static final long MAX_REFTABLE_BYTES = 8L << 20;
    static final int MAX_BACKING_NAME = 1023;
    static final int MAX_SNAPSHOTS = 65536;

    /** One header extension other than backing format and end (kept verbatim, in order). */
    record Extension(int type, byte[] data) {
    }

    int version;
    int clusterBits;
    long size;
    int cryptMethod;
    int l1Size;
    long l1Offset;
    long refcountTableOffset;
    int refcountTableClusters;
    int nbSnapshots;
    long snapshotsOffset;
    long incompatible;
    long compatible;
    long autoclear;
    int refcountOrder = 4;
    int headerLength = V2_LENGTH;
    int compressionType;
    /** The header bytes as read (v3 may carry fields we do not know beyond 112). */
    byte[] raw = new byte[V3_LENGTH];
    List<Extension> extensions = new ArrayList<>();
    String backingFile;
    String backingFormat;

    int clusterSize() {
        return 1 << clusterBits;
    }

    /**
     * Parses and validates cluster 0. {@code head} holds the first min(cluster size, file
     * length) bytes (at least what was readable); {@code fileLength} bounds every table.
     */
    static Qcow2Header parse(ByteBuffer head, long fileLength) throws IoError {
        ByteBuffer b = head.duplicate().order(java.nio.ByteOrder.BIG_ENDIAN);
        if (b.remaining() < V2_LENGTH || b.getInt(0) != MAGIC) {
            throw new IoError(Errno.EINVAL, "Image is not in qcow2 format");
        }
        Qcow2Header h = new Qcow2Header();
        h.version = b.getInt(4);
        if (h.version != 2 && h.version != 3) {
            throw new IoError(Errno.ENOTSUP, "Unsupported qcow2 version " + h.version);
        }
        long backingOffset = b.getLong(8);
        int backingSize = b.getInt(16);
        h.clusterBits = b.getInt(20);
        if (h.clusterBits < 9 || h.clusterBits > 21) {
            throw new IoError(Errno.EINVAL, "Unsupported cluster size: 2^" + h.clusterBits);
        }
        int cs = h.clusterSize();
        h.size = b.getLong(24);
        h.cryptMethod = b.getInt(32);
        h.l1Size = b.getInt(36);
        h.l1Offset = b.getLong(40);
        h.refcountTableOffset = b.getLong(48);
        h.refcountTableClusters = b.getInt(56);
        h.nbSnapshots = b.getInt(60);
        h.snapshotsOffset = b.getLong(64);
        if (h.version == 3) {
            if (b.remaining() < V3_MIN_LENGTH) {
                throw new IoError(Errno.EINVAL, "qcow2 header too short (image is truncated)");
            }
            h.incompatible = b.getLong(72);
            h.compatible = b.getLong(80);
            h.autoclear = b.getLong(88);
            h.refcountOrder = b.getInt(96);
            h.headerLength = b.getInt(100);
            if (h.headerLength < V3_MIN_LENGTH) {
                throw new IoError(Errno.EINVAL, "qcow2 header too short");
            }
            if (h.headerLength > cs || h.headerLength > b.remaining()) {
                throw new IoError(Errno.EINVAL, "qcow2 header exceeds cluster size");
            }
            if (h.headerLength > 104) {
                h.compressionType = b.get(104) & 0xff;
            }
        } else {
            h.headerLength = V2_LENGTH;
        }
        h.raw = new byte[Math.max(h.headerLength, V3_LENGTH)];
        b.get(0, h.raw, 0, h.headerLength);

        long unknown = h.incompatible & ~INCOMPAT_KNOWN;
        if (unknown != 0) {
            throw new IoError(Errno.ENOTSUP, "Unsupported qcow2 feature(s): incompatible bits 0x"
                    + Long.toHexString(unknown));
        }
        if ((h.incompatible & INCOMPAT_DATA_FILE) != 0) {
            throw new IoError(Errno.ENOTSUP, "qcow2 images with an external data file are not supported");
        }
        if ((h.incompatible & INCOMPAT_EXTL2) != 0) {
            throw new IoError(Errno.ENOTSUP, "qcow2 images with extended L2 entries are not supported");
        }
        if ((h.incompatible & INCOMPAT_COMPRESSION) != 0 || h.compressionType != 0) {
            if (h.compressionType != 0) {
                throw new IoError(Errno.ENOTSUP, "Unsupported qcow2 compression type " + h.compressionType
                        + " (only zlib is supported)");
            }
        }
        if (h.cryptMethod != 0) {
            throw new IoError(Errno.ENOTSUP, "Encrypted qcow2 images are not supported (crypt_method "
                    + h.cryptMethod + ")");
        }
        if (h.refcountOrder < 0 || h.refcountOrder > 6) {
            throw new IoError(Errno.EINVAL, "Reference count entry width too large; may not exceed 64 bits");
        }
        if (h.size < 0) {
            throw new IoError(Errno.EINVAL, "Invalid virtual size " + h.size);
        }

        // Refcount table: aligned, after cluster 0, inside the file, bounded.
        if (h.refcountTableClusters <= 0 || (long) h.refcountTableClusters * cs > MAX_REFTABLE_BYTES) {
            throw new IoError(Errno.EINVAL, "Reference count table too large ("
                    + Integer.toUnsignedString(h.refcountTableClusters) + " clusters)");
        }
        checkTable("reference count table", h.refcountTableOffset, (long) h.refcountTableClusters * cs,
                cs, fileLength);

        // L1 table: bounded, big enough for the virtual size, aligned and inside the file.
        if (h.l1Size < 0 || (long) h.l1Size * 8 > MAX_L1_BYTES) {
            throw new IoError(Errno.EFBIG, "Active L1 table too large");
        }
        long l2Coverage = (long) cs * (cs / 8);
        long needed = (h.size + l2Coverage - 1) / l2Coverage;
        if (h.l1Size < needed) {
            throw new IoError(Errno.EINVAL, "L1 table is too small");
        }
        if (h.l1Size > 0) {
            checkTable("L1 table", h.l1Offset, (long) h.l1Size * 8, cs, fileLength);
        }

        if (h.nbSnapshots < 0 || h.nbSnapshots > MAX_SNAPSHOTS) {
            throw new IoError(Errno.EINVAL, "Too many snapshots");
        }
        if (h.nbSnapshots > 0 && (h.snapshotsOffset % cs != 0 || h.snapshotsOffset < cs
                || h.snapshotsOffset >= fileLength)) {
            throw new IoError(Errno.EINVAL, "Invalid snapshot table offset");
        }

        int extEnd = b.remaining();
        if (backingOffset != 0) {
            if (backingSize < 0 || backingSize > MAX_BACKING_NAME) {
                throw new IoError(Errno.EINVAL, "Backing file name too long");
            }
            if (backingOffset < h.headerLength || backingOffset + backingSize > Math.min(cs, b.remaining())) {
                throw new IoError(Errno.EINVAL, "Invalid backing file offset");
            }
            byte[] name = new byte[backingSize];
            b.get((int) backingOffset, name);
            h.backingFile = new String(name, StandardCharsets.UTF_8);
            extEnd = (int) backingOffset;
        }
        h.parseExtensions(b, extEnd);
        return h;
    }

    private static void checkTable(String what, long offset, long bytes, int cs, long fileLength)
            throws IoError {
        if (offset % cs != 0) {
            throw new IoError(Errno.EINVAL, "Invalid " + what + " offset (unaligned)");
        }
        if (offset < cs) {
            throw new IoError(Errno.EINVAL, "Invalid " + what + " offset (overlaps the header)");
        }
        if (offset > fileLength || bytes > fileLength - offset) {
            throw new IoError(Errno.EINVAL, "Invalid " + what + " offset (past the end of the image file)");
        }
    }

    private void parseExtensions(ByteBuffer b, int end) throws IoError {
        int pos = headerLength;
        while (pos + 8 <= end) {
            int type = b.getInt(pos);
            long len = Integer.toUnsignedLong(b.getInt(pos + 4));
            pos += 8;
            if (type == EXT_END) {
                return;
            }
            if (len > end - pos) {
                throw new IoError(Errno.EINVAL, "qcow2 header extension 0x" + Integer.toHexString(type)
                        + " is too large");
            }
            byte[] data = new byte[(int) len];
            b.get(pos, data);
            pos += (int) ((len + 7) & ~7L);
            if (type == EXT_BACKING_FORMAT) {
                backingFormat = new String(data, StandardCharsets.UTF_8);
            } else if (type == EXT_FEATURE_TABLE) {
                continue; // regenerated on every header write, as QEMU does
            } else if (type == EXT_DATA_FILE) {
                throw new IoError(Errno.ENOTSUP, "qcow2 images with an external data file are not supported");
            } else {
                extensions.add(new Extension(type, data));
            }
        }
    }

    /** The data of header extension {@code type}, or null. */
    byte[] extension(int type) {
        for (Extension e : extensions) {
            if (e.type() == type) {
                return e.data();
            }
        }
        return null;
    }

    /**
     * Sets (or with null data removes) header extension {@code type}. New ones go where QEMU's
     * qcow2_update_header() puts them: the bitmaps extension before every extension QEMU does
     * not know, jblockd's intent record right after it.
     */
    void setExtension(int type, byte[] data) {
        for (int i = 0; i < extensions.size(); i++) {
            if (extensions.get(i).type() == type) {
                if (data == null) {
                    extensions.remove(i);
                } else {
                    extensions.set(i, new Extension(type, data));
                }
                return;
            }
        }
        if (data == null) {
            return;
        }
        int at = 0;
        if (type != EXT_BITMAPS) {
            while (at < extensions.size() && extensions.get(at).type() == EXT_BITMAPS) {
                at++;
            }
        }
        extensions.add(at, new Extension(type, data));
    }

    /** Cluster 0 as QEMU's qcow2_update_header() writes it; EINVAL when it does not fit. */
    byte[] serialize() throws IoError {
        int cs = clusterSize();
        ByteBuffer b = ByteBuffer.allocate(cs);
        b.put(0, raw, 0, headerLength);
        b.putInt(0, MAGIC);
        b.putInt(4, version);
        b.putInt(20, clusterBits);
        b.putLong(24, size);
        b.putInt(32, cryptMethod);
        b.putInt(36, l1Size);
        b.putLong(40, l1Offset);
        b.putLong(48, refcountTableOffset);
        b.putInt(56, refcountTableClusters);
        b.putInt(60, nbSnapshots);
        b.putLong(64, snapshotsOffset);
        if (version >= 3) {
            b.putLong(72, incompatible);
            b.putLong(80, compatible);
            b.putLong(88, autoclear);
            b.putInt(96, refcountOrder);
            b.putInt(100, headerLength);
            if (headerLength > 104) {
                b.put(104, (byte) compressionType);
            }
        }
        int pos = headerLength;
        try {
            if (backingFormat != null) {
                pos = putExt(b, pos, EXT_BACKING_FORMAT, backingFormat.getBytes(StandardCharsets.UTF_8));
            }
            if (version >= 3 && cs > 4096) {
                // QEMU 7.2 writes the feature name table into v3 images, except with clusters
                // of 4 KiB and less (observed: qemu-img create -o cluster_size=4096 has none).
                Extension ft = featureTable();
                pos = putExt(b, pos, ft.type(), ft.data());
            }
            for (Extension e : extensions) {
                pos = putExt(b, pos, e.type(), e.data());
            }
            pos = putExt(b, pos, EXT_END, new byte[0]);
            if (backingFile != null) {
                byte[] name = backingFile.getBytes(StandardCharsets.UTF_8);
                if (name.length > MAX_BACKING_NAME) {
                    throw new IoError(Errno.EINVAL, "Backing file name too long");
                }
                b.put(pos, name);
                b.putLong(8, pos);
                b.putInt(16, name.length);
            } else {
                b.putLong(8, 0);
                b.putInt(16, 0);
            }
        } catch (IndexOutOfBoundsException e) {
            throw new IoError(Errno.EINVAL, "qcow2 header extensions and backing file name do not fit in cluster 0");
        }
        return b.array();
    }

    private static int putExt(ByteBuffer b, int pos, int type, byte[] data) {
        int padded = (data.length + 7) & ~7;
        if (pos + 8 + padded > b.capacity()) {
            throw new IndexOutOfBoundsException();
        }
        b.putInt(pos, type);
        b.putInt(pos + 4, data.length);
        b.put(pos + 8, data);
        return pos + 8 + padded;
    }

    /** The feature name table QEMU 7.2 writes into every v3 image (formats.md §2). */
    static Extension featureTable() {
        String[][] names = {
            {"0", "0", "dirty bit"}, {"0", "1", "corrupt bit"}, {"0", "2", "external data file"},
            {"0", "3", "compression type"}, {"0", "4", "extended L2 entries"}, {"1", "0", "lazy refcounts"},
            {"2", "0", "bitmaps"}, {"2", "1", "raw external data"},
        };
        byte[] data = new byte[names.length * 48];
        for (int i = 0; i < names.length; i++) {
            data[i * 48] = (byte) Integer.parseInt(names[i][0]);
            data[i * 48 + 1] = (byte) Integer.parseInt(names[i][1]);
            byte[] n = names[i][2].getBytes(StandardCharsets.US_ASCII);
            System.arraycopy(n, 0, data, i * 48 + 2, n.length);
        }
        return new Extension(EXT_FEATURE_TABLE, data);
    }
}
