package jblockd.block.qcow2;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;

import jblockd.block.Errno;
import jblockd.block.ImageCreator;
import jblockd.block.IoError;

/**
 * {@code qemu-img create -f qcow2} (QEMU's qcow2_co_create): cluster 0 header, refcount table
 * in cluster 1 pointing at the refcount block in cluster 2, clusters 0..2 with refcount 1, then
 * the L1 table allocated like any cluster (cluster 3 onwards; for small clusters and large
 * images the allocator adds refcount blocks exactly as QEMU's does) and written with its exact
 * byte length, so a 64 KiB-cluster image is 0x30000 + 8 * l1_size bytes long (formats.md §3).
 */
final class Qcow2Creator {
    static final int DEFAULT_CLUSTER_SIZE = 65536;

    private Qcow2Creator() {
    }

    static void create(ImageCreator.Options o) throws IOException {
        int cs = o.clusterSize() == 0 ? DEFAULT_CLUSTER_SIZE : o.clusterSize();
        if (cs < 512 || cs > (2 << 20) || Integer.bitCount(cs) != 1) {
            throw new IoError(Errno.EINVAL, "Cluster size must be a power of two between 512 and 2048k");
        }
        if (o.size() < 0 || o.size() % 512 != 0) {
            throw new IoError(Errno.EINVAL, "Image size must be a multiple of 512 bytes");
        }
        if (o.backingFile() != null
                && o.backingFile().getBytes(StandardCharsets.UTF_8).length > Qcow2Header.MAX_BACKING_NAME) {
            throw new IoError(Errno.EINVAL, "Backing file name too long");
        }
        int bits = Integer.numberOfTrailingZeros(cs);
        long l2Coverage = (long) cs * (cs / 8);
        long l1Size = (o.size() + l2Coverage - 1) / l2Coverage;
        if (l1Size * 8 > Qcow2Header.MAX_L1_BYTES) {
            throw new IoError(Errno.EFBIG, "Image size too large for this cluster size");
        }
        Qcow2Header h = new Qcow2Header();
        h.version = o.compatV2() ? 2 : 3;
        h.clusterBits = bits;
        h.size = o.size();
        h.refcountTableOffset = cs;
        h.refcountTableClusters = 1;
        h.refcountOrder = 4;
        h.headerLength = h.version == 3 ? Qcow2Header.V3_LENGTH : Qcow2Header.V2_LENGTH;
        h.raw = new byte[Qcow2Header.V3_LENGTH];
        h.extensions = new ArrayList<>();
        try (FileChannel ch = FileChannel.open(o.path(), StandardOpenOption.CREATE, StandardOpenOption.READ,
                StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING)) {
            HostFile f = HostFile.of(ch);
            f.write(0, ByteBuffer.wrap(h.serialize()));
            ByteBuffer table = ByteBuffer.allocate(cs).putLong(0, 2L * cs);
            f.write(cs, table);
            ByteBuffer block = ByteBuffer.allocate(cs);
            for (int i = 0; i < 3; i++) {
                block.putShort(2 * i, (short) 1);
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
        } catch (IOException e) {
            throw IoError.wrap(e);
        }
    }
}
