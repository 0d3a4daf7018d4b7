package jblockd.block.qcow2;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;

import jblockd.block.BlockNode;
import jblockd.block.Errno;
import jblockd.block.ImageCreator;
import jblockd.block.IoError;

/**
 * The one place that lays out a new qcow2 image (QEMU's qcow2_co_create, shared by
 * {@code qemu-img create -f qcow2} and {@code blockdev-create}): cluster 0 header, refcount
 * table in cluster 1 pointing at the refcount block in cluster 2, clusters 0..2 with refcount 1,
 * then the L1 table allocated like any cluster (cluster 3 onwards; for small clusters and large
 * images the allocator adds refcount blocks exactly as QEMU's does) and written with its exact
 * byte length, so a 64 KiB-cluster image is 0x30000 + 8 * l1_size bytes long (formats.md §3).
 * The refcount width ({@code refcount-bits}) only changes how the three first entries are
 * packed; lazy refcounts is compatible feature bit 0.
 */
final class Qcow2Creator {
    static final int DEFAULT_CLUSTER_SIZE = 65536;

    private Qcow2Creator() {
    }

    /** qemu-img create: a new (or truncated) file at {@code o.path()}. */
    static void create(ImageCreator.Options o) throws IOException {
        check(o);
        try (FileChannel ch = FileChannel.open(o.path(), StandardOpenOption.CREATE, StandardOpenOption.READ,
                StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING)) {
            layout(HostFile.of(ch), o);
        } catch (IOException e) {
            throw IoError.wrap(e);
        }
    }

    /**
     * blockdev-create: lays the image out in an existing node (QEMU writes through a
     * BlockBackend on the {@code file} node, which it does not truncate first). The caller
     * holds the write and resize permissions on the node.
     */
    static void createOn(BlockNode file, ImageCreator.Options o) throws IOException {
        check(o);
        layout(HostFile.of(file), o);
    }

    /**
     * qcow2_co_create()'s option checks, in its order and with its texts (observed on
     * qemu-storage-daemon 7.2).
     */
    static void check(ImageCreator.Options o) throws IoError {
        if (o.size() < 0 || o.size() % 512 != 0) {
            throw new IoError(Errno.EINVAL, "Image size must be a multiple of 512 bytes");
        }
        int cs = o.clusterSize() == 0 ? DEFAULT_CLUSTER_SIZE : o.clusterSize();
        if (cs < 512 || cs > (2 << 20) || Integer.bitCount(cs) != 1) {
            throw new IoError(Errno.EINVAL, "Cluster size must be a power of two between 512 and 2048k");
        }
        if (o.backingFormat() != null && o.backingFile() == null) {
            throw new IoError(Errno.EINVAL, "Backing format cannot be used without backing file");
        }
        if (o.compatV2() && o.lazyRefcounts()) {
            throw new IoError(Errno.EINVAL, "Lazy refcounts only supported with compatibility level 1.1 "
                    + "and above (use version=v3 or greater)");
        }
        int rb = refcountBits(o);
        if (rb <= 0 || rb > 64 || Integer.bitCount(rb) != 1) {
            throw new IoError(Errno.EINVAL, "Refcount width must be a power of two and may not exceed 64 bits");
        }
        if (o.compatV2() && rb != 16) {
            throw new IoError(Errno.EINVAL, "Different refcount widths than 16 bits require compatibility "
                    + "level 1.1 or above (use version=v3 or greater)");
        }
        if (o.backingFile() != null
                && o.backingFile().getBytes(StandardCharsets.UTF_8).length > Qcow2Header.MAX_BACKING_NAME) {
            throw new IoError(Errno.EINVAL, "Backing file name too long");
        }
        long l2Coverage = (long) cs * (cs / 8);
        long l1Size = (o.size() + l2Coverage - 1) / l2Coverage;
        if (l1Size * 8 > Qcow2Header.MAX_L1_BYTES) {
            throw new IoError(Errno.EFBIG, "Image size too large for this cluster size");
        }
    }

    private static int refcountBits(ImageCreator.Options o) {
        return o.refcountBits() == 0 ? 16 : o.refcountBits();
    }

    private static void layout(HostFile f, ImageCreator.Options o) throws IOException {
        int cs = o.clusterSize() == 0 ? DEFAULT_CLUSTER_SIZE : o.clusterSize();
        int bits = Integer.numberOfTrailingZeros(cs);
        long l2Coverage = (long) cs * (cs / 8);
        long l1Size = (o.size() + l2Coverage - 1) / l2Coverage;
        int refcountOrder = Integer.numberOfTrailingZeros(refcountBits(o));
        Qcow2Header h = new Qcow2Header();
        h.version = o.compatV2() ? 2 : 3;
        h.clusterBits = bits;
        h.size = o.size();
        h.refcountTableOffset = cs;
        h.refcountTableClusters = 1;
        h.refcountOrder = refcountOrder;
        h.compatible = o.lazyRefcounts() ? Qcow2Header.COMPAT_LAZY_REFCOUNTS : 0;
        h.headerLength = h.version == 3 ? Qcow2Header.V3_LENGTH : Qcow2Header.V2_LENGTH;
        h.raw = new byte[Qcow2Header.V3_LENGTH];
        h.extensions = new ArrayList<>();
        f.write(0, ByteBuffer.wrap(h.serialize()));
        ByteBuffer table = ByteBuffer.allocate(cs).putLong(0, 2L * cs);
        f.write(cs, table);
        // clusters 0, 1, 2 with refcount 1, packed at the image's refcount width (qcow2.rst:
        // entries are big endian; sub-byte widths fill a byte from its least significant bit)
        ByteBuffer block = ByteBuffer.allocate(cs);
        int width = 1 << refcountOrder;
        for (int i = 0; i < 3; i++) {
            if (width < 8) {
                int perByte = 8 / width;
                block.put(i / perByte, (byte) (block.get(i / perByte) | (1 << ((i % perByte) * width))));
            } else {
                int bytes = width / 8;
                block.put(i * bytes + bytes - 1, (byte) 1);
            }
        }
        f.write(2L * cs, block);
        if (l1Size > 0) {
            Metadata m = new Metadata(f, h);
            long bytes = l1Size * 8;
            m.lock.lock();
            try {
                long l1Offset = m.allocClusters((bytes + cs - 1) / cs);
                for (long done = 0; done < bytes; ) {
                    int n = (int) Math.min(1 << 20, bytes - done);
                    f.write(l1Offset + done, ByteBuffer.allocate(n));
                    done += n;
                }
                m.writeBack();
                h.l1Size = (int) l1Size;
                h.l1Offset = l1Offset;
            } finally {
                m.lock.unlock();
            }
        }
        h.backingFile = o.backingFile();
        h.backingFormat = o.backingFile() == null ? null : o.backingFormat();
        f.write(0, ByteBuffer.wrap(h.serialize()));
        f.flush();
    }
}
