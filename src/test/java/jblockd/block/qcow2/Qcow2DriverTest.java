package jblockd.block.qcow2;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Random;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import jblockd.block.Allocation;
import jblockd.block.BlockNode;
import jblockd.block.DriverRegistry;
import jblockd.block.Errno;
import jblockd.block.Extent;
import jblockd.block.ImageCreator;
import jblockd.block.IoError;
import jblockd.block.NodeGraph;

class Qcow2DriverTest {
    @TempDir
    Path dir;

    private final NodeGraph graph = new NodeGraph(DriverRegistry.standard());

    @AfterEach
    void closeGraph() {
        graph.closeAll();
    }

    private Path create(String name, long size, int clusterSize, boolean v2, String backing, String fmt)
            throws IOException {
        Path p = dir.resolve(name);
        graph.drivers().creator("qcow2").orElseThrow()
                .create(new ImageCreator.Options(p, size, backing, fmt, clusterSize, v2));
        return p;
    }

    private BlockNode open(Path p, boolean readOnly) throws IOException {
        // discard=unmap: the workloads discard and the model expects the data gone
        return graph.add(graph.imageOptions(p, "qcow2", readOnly, false, null, true));
    }

    @Test
    void probeRecognisesCreatedImage() throws Exception {
        Path p = create("a.qcow2", 1 << 20, 0, false, null, null);
        assertThat(graph.drivers().probe(p)).isEqualTo("qcow2");
        assertThat(Files.size(p)).isEqualTo(0x30000 + 8);
    }

    @Test
    void writeThenReadRoundTripsAndStatusReportsRuns() throws Exception {
        Path p = create("a.qcow2", 4 << 20, 65536, false, null, null);
        BlockNode n = open(p, false);
        byte[] data = Qcow2Workload.randomBytes(new Random(1), 100_000);
        n.write(70_000, ByteBuffer.wrap(data), false);
        ByteBuffer back = ByteBuffer.allocate(100_000);
        n.read(70_000, back);
        assertThat(back.array()).isEqualTo(data);

        assertThat(n.status(0, 4 << 20)).isEqualTo(new Extent(0, 65536, Allocation.UNALLOCATED));
        assertThat(n.status(65536, (4 << 20) - 65536)).isEqualTo(new Extent(65536, 2 * 65536, Allocation.DATA));
        n.writeZeroes(65536, 65536, false);
        assertThat(n.status(65536, 65536)).isEqualTo(new Extent(65536, 65536, Allocation.ZERO));
        ByteBuffer z = ByteBuffer.allocate(65536);
        n.read(65536, z);
        assertThat(z.array()).containsOnly(0);
        assertThat(n.driver().clusterSize()).isEqualTo(65536);
        assertThat(n.driver().formatName()).isEqualTo("qcow2");
        assertThat(n.driver().children()).extracting(c -> c.role()).containsExactly("file");
    }

    @Test
    void setBackingRewritesHeaderAndReopenFollowsIt() throws Exception {
        Path base = create("base.qcow2", 1 << 20, 0, false, null, null);
        BlockNode b = open(base, false);
        byte[] data = Qcow2Workload.randomBytes(new Random(2), 1 << 20);
        b.write(0, ByteBuffer.wrap(data), false);
        graph.closeAll();

        Path top = create("top.qcow2", 1 << 20, 0, false, null, null);
        BlockNode t = open(top, false);
        t.driver().setBacking(null, "base.qcow2", "qcow2");
        graph.closeAll();

        BlockNode t2 = open(top, true);
        assertThat(t2.driver().backing()).isNotNull();
        assertThat(t2.driver().backing().driver().filename()).isEqualTo(base.toString());
        ByteBuffer back = ByteBuffer.allocate(1 << 20);
        t2.read(0, back);
        assertThat(back.array()).isEqualTo(data);
        assertThat(t2.driver().children()).extracting(c -> c.role()).containsExactly("file", "backing");
    }

    @ParameterizedTest(name = "seed {0}, cluster {1}, v2 {2}, backing {3}")
    @CsvSource({"1,65536,false,false", "2,4096,false,true", "3,512,true,false", "4,2097152,false,true",
            "5,65536,true,true", "6,1024,false,false"})
    void randomizedWorkloadMatchesByteArrayModel(long seed, int cs, boolean v2, boolean withBacking)
            throws Exception {
        int size = 3 << 20;
        byte[] baseData = null;
        Path img;
        Random r = new Random(seed);
        if (withBacking) {
            Path base = create("base.qcow2", size - (1 << 20), 65536, false, null, null);
            BlockNode b = open(base, false);
            baseData = Qcow2Workload.randomBytes(r, size - (1 << 20));
            b.write(0, ByteBuffer.wrap(baseData), false);
            graph.closeAll();
            img = create("top.qcow2", size, cs, v2, "base.qcow2", "qcow2");
        } else {
            img = create("top.qcow2", size, cs, v2, null, null);
        }
        byte[] model = new byte[size];
        if (baseData != null) {
            System.arraycopy(baseData, 0, model, 0, baseData.length);
        }
        BlockNode n = open(img, false);
        Qcow2Workload w = new Qcow2Workload(n, model, baseData, cs, !v2);
        w.randomOps(r, 150, 0, size);
        w.verify();
        w.concurrentOps(r, 6, 40);
        w.verify();
        graph.closeAll();
        // Reopened from disk, the content is the same.
        w = new Qcow2Workload(open(img, true), model, baseData, cs, !v2);
        w.verify();
    }

    // ------------------------------------------------------------------ bad input

    private void patch(Path p, long offset, ByteBuffer bytes) throws IOException {
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.WRITE)) {
            ch.write(bytes, offset);
        }
    }

    private void assertOpenFails(Path p, Errno errno, String message) {
        assertThatThrownBy(() -> open(p, true)).isInstanceOfSatisfying(IoError.class, e -> {
            assertThat(e.errno()).isEqualTo(errno);
            assertThat(e.getMessage()).contains(message);
        });
        assertThat(graph.nodes()).isEmpty();
    }

    @Test
    void truncatedHeaderIsRefused() throws Exception {
        Path p = create("t.qcow2", 1 << 20, 0, false, null, null);
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.WRITE)) {
            ch.truncate(40);
        }
        assertOpenFails(p, Errno.EINVAL, "truncated");
    }

    @Test
    void truncatedTablesAreRefused() throws Exception {
        Path p = create("t.qcow2", 1 << 20, 0, false, null, null);
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.WRITE)) {
            ch.truncate(0x20000);
        }
        assertOpenFails(p, Errno.EINVAL, "L1 table offset (past the end");
    }

    @Test
    void badMagicIsRefused() throws Exception {
        Path p = create("m.qcow2", 1 << 20, 0, false, null, null);
        patch(p, 0, ByteBuffer.wrap(new byte[] {'Q', 'F', 'I', 0}));
        assertOpenFails(p, Errno.EINVAL, "not in qcow2 format");
    }

    @Test
    void l1TablePastEndOfFileIsRefused() throws Exception {
        Path p = create("l1.qcow2", 1 << 20, 0, false, null, null);
        patch(p, 40, ByteBuffer.allocate(8).putLong(0, 0x7fff0000L));
        assertOpenFails(p, Errno.EINVAL, "L1 table offset (past the end");
    }

    @Test
    void l1TableOverlappingHeaderIsRefused() throws Exception {
        Path p = create("l1h.qcow2", 1 << 20, 0, false, null, null);
        patch(p, 40, ByteBuffer.allocate(8).putLong(0, 0));
        assertOpenFails(p, Errno.EINVAL, "L1 table offset (overlaps the header)");
    }

    @Test
    void refcountTablePastEndOrOverlappingHeaderIsRefused() throws Exception {
        Path p = create("rt.qcow2", 1 << 20, 0, false, null, null);
        patch(p, 48, ByteBuffer.allocate(8).putLong(0, 0x100000000L));
        assertOpenFails(p, Errno.EINVAL, "reference count table offset (past the end");
        patch(p, 48, ByteBuffer.allocate(8).putLong(0, 0));
        assertOpenFails(p, Errno.EINVAL, "reference count table offset (overlaps the header)");
        patch(p, 48, ByteBuffer.allocate(8).putLong(0, 0x10200));
        assertOpenFails(p, Errno.EINVAL, "unaligned");
    }

    @Test
    void absurdL1SizeIsRefusedWithoutAllocating() throws Exception {
        Path p = create("l1s.qcow2", 1 << 20, 0, false, null, null);
        patch(p, 36, ByteBuffer.allocate(4).putInt(0, 0x7fffffff));
        assertOpenFails(p, Errno.EFBIG, "Active L1 table too large");
        patch(p, 36, ByteBuffer.allocate(4).putInt(0, 1 << 20)); // 8 MiB, bounded but past EOF
        assertOpenFails(p, Errno.EINVAL, "past the end");
        patch(p, 36, ByteBuffer.allocate(4).putInt(0, 0)); // too small for the virtual size
        assertOpenFails(p, Errno.EINVAL, "L1 table is too small");
    }

    @Test
    void clusterBitsOutOfRangeAreRefused() throws Exception {
        Path p = create("cb.qcow2", 1 << 20, 0, false, null, null);
        patch(p, 20, ByteBuffer.allocate(4).putInt(0, 8));
        assertOpenFails(p, Errno.EINVAL, "Unsupported cluster size: 2^8");
        patch(p, 20, ByteBuffer.allocate(4).putInt(0, 22));
        assertOpenFails(p, Errno.EINVAL, "Unsupported cluster size: 2^22");
    }

    @Test
    void unknownIncompatibleBitIsRefused() throws Exception {
        Path p = create("ic.qcow2", 1 << 20, 0, false, null, null);
        patch(p, 72, ByteBuffer.allocate(8).putLong(0, 1L << 40));
        assertOpenFails(p, Errno.ENOTSUP, "Unsupported qcow2 feature(s)");
    }

    @Test
    void encryptionExtendedL2AndBadVersionAreRefused() throws Exception {
        Path p = create("enc.qcow2", 1 << 20, 0, false, null, null);
        patch(p, 32, ByteBuffer.allocate(4).putInt(0, 2));
        assertOpenFails(p, Errno.ENOTSUP, "Encrypted");
        patch(p, 32, ByteBuffer.allocate(4).putInt(0, 0));
        patch(p, 72, ByteBuffer.allocate(8).putLong(0, Qcow2Header.INCOMPAT_EXTL2));
        assertOpenFails(p, Errno.ENOTSUP, "extended L2");
        patch(p, 72, ByteBuffer.allocate(8).putLong(0, 0));
        patch(p, 4, ByteBuffer.allocate(4).putInt(0, 4));
        assertOpenFails(p, Errno.ENOTSUP, "Unsupported qcow2 version 4");
    }

    @Test
    void corruptAndDirtyImagesOpenReadOnlyButNotReadWrite() throws Exception {
        Path p = create("c.qcow2", 1 << 20, 0, false, null, null);
        patch(p, 72, ByteBuffer.allocate(8).putLong(0, Qcow2Header.INCOMPAT_CORRUPT));
        assertThatThrownBy(() -> open(p, false)).isInstanceOfSatisfying(IoError.class,
                e -> assertThat(e.getMessage()).contains("Image is corrupt; cannot be opened read/write"));
        assertThat(open(p, true).readOnly()).isTrue();
        graph.closeAll();
        patch(p, 72, ByteBuffer.allocate(8).putLong(0, Qcow2Header.INCOMPAT_DIRTY));
        assertThatThrownBy(() -> open(p, false)).isInstanceOfSatisfying(IoError.class,
                e -> assertThat(e.getMessage()).contains("dirty"));
    }

    @Test
    void unknownAutoclearBitsAreClearedOnReadWriteOpen() throws Exception {
        Path p = create("ac.qcow2", 1 << 20, 0, false, null, null);
        patch(p, 88, ByteBuffer.allocate(8).putLong(0, 0x8000000000000001L));
        open(p, true);
        graph.closeAll();
        assertThat(ByteBuffer.wrap(Files.readAllBytes(p)).getLong(88)).isEqualTo(0x8000000000000001L);
        open(p, false);
        graph.closeAll();
        assertThat(ByteBuffer.wrap(Files.readAllBytes(p)).getLong(88)).isZero();
    }

    @Test
    void backingNameOutsideClusterZeroIsRefused() throws Exception {
        Path p = create("bn.qcow2", 1 << 20, 0, false, null, null);
        patch(p, 8, ByteBuffer.allocate(12).putLong(0, 65530).putInt(8, 100));
        assertOpenFails(p, Errno.EINVAL, "Invalid backing file offset");
        patch(p, 8, ByteBuffer.allocate(12).putLong(0, 0x200).putInt(8, 2000));
        assertOpenFails(p, Errno.EINVAL, "Backing file name too long");
    }
}
