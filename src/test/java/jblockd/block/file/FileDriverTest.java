package jblockd.block.file;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Random;
import java.util.concurrent.atomic.AtomicReference;

import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.Allocation;
import jblockd.block.BlockDriverContract;
import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.DriverRegistry;
import jblockd.block.Errno;
import jblockd.block.Extent;
import jblockd.block.ImageCreator;
import jblockd.block.IoError;
import jblockd.block.NodeGraph;

class FileDriverTest {

    static BlockNode openFile(Path dir, long size, boolean direct) throws IOException {
        Path img = dir.resolve(direct ? "direct.raw" : "buffered.raw");
        NodeGraph graph = new NodeGraph(DriverRegistry.standard());
        graph.drivers().creator("raw").orElseThrow().create(ImageCreator.Options.of(img, size));
        return graph.add(new BlockdevOptions.File(
                new BlockdevOptions.Common(null, false, direct, false, false), img.toString()));
    }

    @Nested
    class Buffered extends BlockDriverContract {
        @Override
        protected BlockNode open(Path dir, long size) throws IOException {
            return openFile(dir, size, false);
        }
    }

    @Nested
    class Direct extends BlockDriverContract {
        @Override
        protected BlockNode open(Path dir, long size) throws IOException {
            BlockNode n = openFile(dir, size, true);
            assertThat(((FileDriver) n.driver()).direct()).isTrue();
            return n;
        }
    }

    @TempDir
    Path dir;

    private static long allocatedBytes(Path p) throws Exception {
        Process pr = new ProcessBuilder("stat", "-c", "%b %B", p.toString()).redirectErrorStream(true).start();
        String out = new String(pr.getInputStream().readAllBytes()).trim();
        assertThat(pr.waitFor()).as(out).isZero();
        String[] f = out.split(" ");
        return Long.parseLong(f[0]) * Long.parseLong(f[1]);
    }

    @Test
    void rawCreatorMakesASparseFileOfTheSize() throws Exception {
        Path img = dir.resolve("new.raw");
        DriverRegistry.standard().creator("raw").orElseThrow().create(ImageCreator.Options.of(img, 64L << 20));
        assertThat(Files.size(img)).isEqualTo(64L << 20);
        assertThat(allocatedBytes(img)).isZero();
    }

    @Test
    void punchHoleKeepsFileSizeAndFreesBlocks() throws Exception {
        Path img = dir.resolve("punch.raw");
        byte[] data = new byte[4 << 20];
        new Random(1).nextBytes(data);
        Files.write(img, data);
        try (FileDriver f = FileDriver.open(img, false)) {
            f.flush();
            long before = allocatedBytes(img);
            assertThat(before).isGreaterThanOrEqualTo(4L << 20);
            f.discard(1 << 20, 2 << 20);
            assertThat(Files.size(img)).isEqualTo(4L << 20);
            assertThat(allocatedBytes(img)).isLessThanOrEqualTo(before - (2L << 20));
            assertThat(f.status(1 << 20, 2 << 20)).isEqualTo(new Extent(1 << 20, 2 << 20, Allocation.ZERO));
            assertThat(f.status(0, 4 << 20)).isEqualTo(new Extent(0, 1 << 20, Allocation.DATA));
            // write-zeroes with unmap punches too; without unmap the range still reads zero.
            f.writeZeroes(3 << 20, 1 << 20, true);
            assertThat(f.status(1 << 20, 3 << 20)).isEqualTo(new Extent(1 << 20, 3 << 20, Allocation.ZERO));
            ByteBuffer back = ByteBuffer.allocate(4 << 20);
            f.read(0, back);
            byte[] want = data.clone();
            Arrays.fill(want, 1 << 20, 4 << 20, (byte) 0);
            assertThat(back.array()).isEqualTo(want);
        }
    }

    @Test
    void statusReportsHolesAsZeroAndDataAsData() throws Exception {
        Path img = dir.resolve("sparse.raw");
        DriverRegistry.standard().creator("raw").orElseThrow().create(ImageCreator.Options.of(img, 8L << 20));
        try (FileDriver f = FileDriver.open(img, false)) {
            f.write(2 << 20, ByteBuffer.wrap(new byte[65536]).put(0, (byte) 1), false);
            assertThat(f.status(0, 8 << 20)).isEqualTo(new Extent(0, 2 << 20, Allocation.ZERO));
            assertThat(f.status(2 << 20, 6 << 20)).isEqualTo(new Extent(2 << 20, 65536, Allocation.DATA));
            assertThat(f.status((2 << 20) + 65536, (6 << 20) - 65536))
                    .isEqualTo(new Extent((2 << 20) + 65536, (6 << 20) - 65536, Allocation.ZERO));
            // Past the end (the file is growable): zeroes, merged with a hole before the end.
            assertThat(f.status(7 << 20, 2 << 20)).isEqualTo(new Extent(7 << 20, 2 << 20, Allocation.ZERO));
            assertThat(f.status(8 << 20, 4096)).isEqualTo(new Extent(8 << 20, 4096, Allocation.ZERO));
        }
    }

    @Test
    void directIoOfUnalignedRangesMatchesTheFileBytes() throws Exception {
        Path img = dir.resolve("d.raw");
        byte[] initial = new byte[1 << 20];
        new Random(2).nextBytes(initial);
        Files.write(img, initial);
        byte[] model = initial.clone();
        try (FileDriver f = FileDriver.open(img, false, true, false)) {
            Random r = new Random(3);
            for (int i = 0; i < 200; i++) {
                int off = r.nextInt(model.length - 10_000);
                int len = 1 + r.nextInt(9_000);
                byte[] d = new byte[len];
                r.nextBytes(d);
                // heap buffers and direct buffers at odd positions both work
                ByteBuffer src = i % 2 == 0 ? ByteBuffer.wrap(d)
                        : ByteBuffer.allocateDirect(len + 3).position(3).put(d).position(3);
                f.write(off, src, false);
                System.arraycopy(d, 0, model, off, len);
                int roff = r.nextInt(model.length - 10_000);
                int rlen = 1 + r.nextInt(9_000);
                ByteBuffer dst = ByteBuffer.allocateDirect(rlen + 1).position(1);
                f.read(roff, dst);
                byte[] got = new byte[rlen];
                dst.position(1).get(got);
                assertThat(got).isEqualTo(Arrays.copyOfRange(model, roff, roff + rlen));
            }
            // An unaligned write that ends past EOF extends to exactly its end.
            f.write(model.length + 100, ByteBuffer.wrap(new byte[] {9, 9, 9}), false);
            assertThat(f.length()).isEqualTo(model.length + 103L);
        }
        byte[] onDisk = Files.readAllBytes(img);
        assertThat(Arrays.copyOf(onDisk, model.length)).isEqualTo(model);
        assertThat(Arrays.copyOfRange(onDisk, model.length, model.length + 103))
                .isEqualTo(concat(new byte[100], new byte[] {9, 9, 9}));
    }

    private static byte[] concat(byte[] a, byte[] b) {
        byte[] r = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, r, a.length, b.length);
        return r;
    }

    @Test
    void readOnlyOpenRefusesWritesAndTruncate() throws Exception {
        Path img = dir.resolve("ro.raw");
        Files.write(img, new byte[8192]);
        try (FileDriver f = FileDriver.open(img, true)) {
            assertThat(f.capabilities().readOnly()).isTrue();
            BlockNode n = new BlockNode("ro", false, f, false);
            assertThat(n.readOnly()).isTrue();
            assertThatThrownBy(() -> n.write(0, ByteBuffer.allocate(1), false))
                    .isInstanceOfSatisfying(IoError.class, e -> assertThat(e.errno()).isEqualTo(Errno.EPERM));
            assertThatThrownBy(() -> f.truncate(0))
                    .isInstanceOfSatisfying(IoError.class, e -> assertThat(e.errno()).isEqualTo(Errno.EROFS));
        }
    }

    @Test
    void missingFileIsEnoentWithQemusMessage() {
        Path img = dir.resolve("nope.raw");
        assertThatThrownBy(() -> FileDriver.open(img, false))
                .isInstanceOfSatisfying(IoError.class, e -> {
                    assertThat(e.errno()).isEqualTo(Errno.ENOENT);
                    assertThat(e.getMessage()).isEqualTo("Could not open '" + img + "': No such file or directory");
                });
    }

    @Test
    void truncateGrowsSparseAndShrinks() throws Exception {
        Path img = dir.resolve("t.raw");
        Files.write(img, new byte[4096]);
        try (FileDriver f = FileDriver.open(img, false)) {
            f.truncate(10 << 20);
            assertThat(f.length()).isEqualTo(10 << 20);
            assertThat(f.status(4096, 10 << 20).allocation()).isEqualTo(Allocation.ZERO);
            f.truncate(100);
            assertThat(Files.size(img)).isEqualTo(100);
        }
    }

    @Test
    void interruptedReaderFailsAloneAndTheImageStaysUsable() throws Exception {
        Path img = dir.resolve("i.raw");
        byte[] data = new byte[1 << 20];
        new Random(5).nextBytes(data);
        Files.write(img, data);
        try (FileDriver f = FileDriver.open(img, false)) {
            AtomicReference<Throwable> seen = new AtomicReference<>();
            Thread t = Thread.ofVirtual().unstarted(() -> {
                Thread.currentThread().interrupt(); // the channel closes itself on this read
                try {
                    f.read(0, ByteBuffer.allocate(4096));
                } catch (Throwable e) {
                    seen.set(e);
                }
            });
            t.start();
            t.join();
            assertThat(seen.get()).isInstanceOfSatisfying(IoError.class,
                    e -> assertThat(e.errno()).isEqualTo(Errno.ECANCELED));
            ByteBuffer back = ByteBuffer.allocate(1 << 20);
            f.read(0, back);
            assertThat(back.array()).isEqualTo(data);
            f.write(0, ByteBuffer.wrap(new byte[] {1}), true);
        }
    }

    @Test
    void nativeFailuresCarryTheirRealErrno() throws Exception {
        Path img = dir.resolve("big.raw");
        Files.write(img, new byte[4096]);
        try (FileDriver f = FileDriver.open(img, false)) {
            // Beyond ext4/xfs's maximum file size: fallocate fails with EFBIG (captured errno)...
            long huge = 1L << 62;
            assertThatThrownBy(() -> f.writeZeroes(huge, 4096, false))
                    .isInstanceOfSatisfying(IoError.class, e -> assertThat(e.errno()).isEqualTo(Errno.EFBIG));
            // ...and so does pwrite through the FileChannel (the JDK's message, mapped).
            assertThatThrownBy(() -> f.write(huge, ByteBuffer.allocate(512), false))
                    .isInstanceOfSatisfying(IoError.class, e -> assertThat(e.errno()).isIn(Errno.EFBIG, Errno.EINVAL));
            assertThat(f.length()).isEqualTo(4096);
        }
    }

    @Test
    void jdkMessagesMapToErrnoKinds() {
        assertThat(FileDriver.mapIo(new IOException("No space left on device")).errno()).isEqualTo(Errno.ENOSPC);
        assertThat(FileDriver.mapIo(new IOException("File too large")).errno()).isEqualTo(Errno.EFBIG);
        assertThat(FileDriver.mapIo(new IOException("Read-only file system")).errno()).isEqualTo(Errno.EROFS);
        assertThat(FileDriver.mapIo(new IOException("Input/output error")).errno()).isEqualTo(Errno.EIO);
    }

    @Test
    void directWritesZeroesAndDiscardsSharingBlocksLoseNoUpdate() throws Exception {
        Path img = dir.resolve("mixed.raw");
        byte[] initial = new byte[1 << 20];
        new Random(11).nextBytes(initial);
        Files.write(img, initial);
        byte[] model = initial.clone();
        int owners = 48;
        int span = 1000; // not a multiple of the block size: neighbours share O_DIRECT blocks
        try (FileDriver f = FileDriver.open(img, false, true, false)) {
            AtomicReference<Throwable> failure = new AtomicReference<>();
            Thread[] threads = new Thread[owners];
            for (int w = 0; w < owners; w++) {
                long off = 5 + (long) w * span;
                byte[] data = new byte[span];
                new Random(200 + w).nextBytes(data);
                int kind = w % 3;
                if (kind == 0) {
                    System.arraycopy(data, 0, model, (int) off, span);
                } else {
                    Arrays.fill(model, (int) off, (int) off + span, (byte) 0);
                }
                threads[w] = Thread.ofVirtual().start(() -> {
                    try {
                        for (int round = 0; round < 20; round++) {
                            switch (kind) {
                                case 0 -> f.write(off, ByteBuffer.wrap(data), false);
                                case 1 -> f.writeZeroes(off, span, round % 2 == 0);
                                default -> {
                                    f.discard(off, span);
                                    f.writeZeroes(off, span, false);
                                }
                            }
                        }
                    } catch (Throwable t) {
                        failure.compareAndSet(null, t);
                    }
                });
            }
            for (Thread t : threads) {
                t.join();
            }
            if (failure.get() != null) {
                throw new AssertionError(failure.get());
            }
        }
        assertThat(Files.readAllBytes(img)).isEqualTo(model);
    }

    @Test
    void directWritesRacingPastTheEndKeepEveryWriteAndTheExactLength() throws Exception {
        // qcow2 allocates clusters by writing past the end of its file from many requests at
        // once; with O_DIRECT an unaligned extender cuts the file back to its exact end, which
        // must never cut off what a concurrent extender wrote.
        for (int round = 0; round < 5; round++) {
            Path img = dir.resolve("extend" + round + ".raw");
            Files.write(img, new byte[1000]);
            int writers = 32;
            byte[][] data = new byte[writers][];
            long[] offsets = new long[writers];
            try (FileDriver f = FileDriver.open(img, false, true, false)) {
                AtomicReference<Throwable> failure = new AtomicReference<>();
                Thread[] threads = new Thread[writers];
                for (int w = 0; w < writers; w++) {
                    offsets[w] = 8192L * (w + 1);
                    data[w] = new byte[w % 2 == 0 ? 8192 : 5000]; // aligned and unaligned ends
                    new Random(round * 100 + w).nextBytes(data[w]);
                    int id = w;
                    threads[w] = Thread.ofVirtual().start(() -> {
                        try {
                            f.write(offsets[id], ByteBuffer.wrap(data[id]), false);
                        } catch (Throwable t) {
                            failure.compareAndSet(null, t);
                        }
                    });
                }
                for (Thread t : threads) {
                    t.join();
                }
                if (failure.get() != null) {
                    throw new AssertionError(failure.get());
                }
                long end = offsets[writers - 1] + data[writers - 1].length;
                assertThat(f.length()).isEqualTo(end);
            }
            byte[] onDisk = Files.readAllBytes(img);
            assertThat(onDisk.length).isEqualTo((int) (offsets[writers - 1] + data[writers - 1].length));
            for (int w = 0; w < writers; w++) {
                int o = (int) offsets[w];
                assertThat(Arrays.copyOfRange(onDisk, o, o + data[w].length)).as("round %d writer %d", round, w)
                        .isEqualTo(data[w]);
            }
        }
    }
}
