package jblockd.block.qcow2;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import jblockd.block.BlockNode;
import jblockd.block.DriverRegistry;
import jblockd.block.ImageCreator;
import jblockd.block.NodeGraph;

/** Interop with QEMU 7.2's qemu-img / qemu-io in both directions. */
class Qcow2InteropIT {
    @TempDir
    Path dir;

    private final NodeGraph graph = new NodeGraph(DriverRegistry.standard());

    @BeforeAll
    static void needsQemu() {
        assumeTrue(onPath("qemu-img") && onPath("qemu-io"), "qemu-img/qemu-io not installed");
    }

    @AfterEach
    void closeGraph() {
        graph.closeAll();
    }

    static boolean onPath(String tool) {
        for (String d : System.getenv().getOrDefault("PATH", "").split(":")) {
            if (Files.isExecutable(Path.of(d, tool))) {
                return true;
            }
        }
        return false;
    }

    record Result(int exit, String out) {
    }

    Result run(String... cmd) throws Exception {
        Process p = new ProcessBuilder(cmd).directory(dir.toFile()).redirectErrorStream(true).start();
        try {
            byte[] out = p.getInputStream().readAllBytes();
            assertThat(p.waitFor(60, TimeUnit.SECONDS)).isTrue();
            return new Result(p.exitValue(), new String(out, StandardCharsets.UTF_8));
        } finally {
            p.destroyForcibly();
        }
    }

    void ok(String... cmd) throws Exception {
        Result r = run(cmd);
        assertThat(r.exit()).as("%s: %s", String.join(" ", cmd), r.out()).isZero();
    }

    private Path create(String name, long size, int cs, boolean v2, String backing, String fmt) throws IOException {
        Path p = dir.resolve(name);
        graph.drivers().creator("qcow2").orElseThrow()
                .create(new ImageCreator.Options(p, size, backing, fmt, cs, v2));
        return p;
    }

    private BlockNode open(Path p, boolean ro) throws IOException {
        // discard=unmap: the workloads discard and expect the data gone and clusters freed
        return graph.add(graph.imageOptions(p, "qcow2", ro, false, null, true));
    }

    private void assertCheckClean(Path img) throws Exception {
        // -U: some images are still open read-write here (QEMU's lock bytes say so)
        Result r = run("qemu-img", "check", "-U", "-f", "qcow2", img.toString());
        assertThat(r.exit()).as("qemu-img check: %s", r.out()).isZero();
        assertThat(r.out()).contains("No errors were found on the image.");
    }

    private void assertSameAsRaw(Path img, byte[] expected) throws Exception {
        Path ref = dir.resolve(img.getFileName() + ".ref.raw");
        Files.write(ref, expected);
        ok("qemu-img", "compare", "-U", "-f", "qcow2", "-F", "raw", img.toString(), ref.toString());
    }

    /** What QEMU reads from an image: qemu-img convert -O raw. */
    private byte[] qemuRead(Path img) throws Exception {
        Path out = dir.resolve(img.getFileName() + ".conv.raw");
        ok("qemu-img", "convert", "-O", "raw", img.toString(), out.toString());
        return Files.readAllBytes(out);
    }

    private byte[] ourRead(Path img) throws Exception {
        BlockNode n = open(img, true);
        byte[] b = new byte[(int) n.length()];
        n.read(0, ByteBuffer.wrap(b));
        graph.closeAll();
        return b;
    }

    // ------------------------------------------------------------------ creation

    @ParameterizedTest(name = "size {0}, cluster {1}, compat=0.10 {2}, backing {3}")
    @CsvSource({
        "1073741824,65536,false,", "67108864,4096,false,", "1073741824,2097152,false,",
        "1073741824,512,false,", "0,65536,false,", "1048576,65536,true,",
        "1048576,65536,false,base.qcow2", "1048576,65536,true,base.qcow2", "3221225472,1024,false,"})
    void createdImageIsByteIdenticalToQemuImgCreate(long size, int cs, boolean v2, String backing) throws Exception {
        Path ours = create("ours.qcow2", size, cs, v2, backing, backing == null ? null : "qcow2");
        List<String> cmd = new ArrayList<>(List.of("qemu-img", "create", "-q", "-f", "qcow2", "-o",
                "cluster_size=" + cs + ",compat=" + (v2 ? "0.10" : "1.1")));
        if (backing != null) {
            cmd.addAll(List.of("-u", "-b", backing, "-F", "qcow2"));
        }
        cmd.addAll(List.of("theirs.qcow2", Long.toString(size)));
        ok(cmd.toArray(String[]::new));
        byte[] a = Files.readAllBytes(ours);
        byte[] b = Files.readAllBytes(dir.resolve("theirs.qcow2"));
        assertThat(a.length).isEqualTo(b.length);
        assertThat(Arrays.mismatch(a, b)).as("first differing byte").isEqualTo(-1);
        if (backing == null) {
            assertCheckClean(ours);
        }
    }

    // ------------------------------------------------------------------ our writes, QEMU's check

    @ParameterizedTest(name = "seed {0}, cluster {1}, compat=0.10 {2}, backing {3}")
    @CsvSource({"11,512,false,false", "12,4096,false,true", "13,65536,false,false", "14,2097152,false,false",
            "15,65536,true,false", "16,4096,true,true", "17,65536,false,true", "18,1024,false,false"})
    void writtenImagePassesQemuImgCheckAndCompare(long seed, int cs, boolean v2, boolean withBacking)
            throws Exception {
        int size = 4 << 20;
        Random r = new Random(seed);
        byte[] baseData = null;
        Path img;
        if (withBacking) {
            // A qemu-made base, shorter than the overlay, with data written by qemu-io.
            ok("qemu-img", "create", "-q", "-f", "qcow2", "base.qcow2", "3M");
            ok("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 3M", "-c", "write -z 1M 64k",
                    "base.qcow2");
            baseData = qemuRead(dir.resolve("base.qcow2"));
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
        w.randomOps(r, 120, 0, size);
        w.concurrentOps(r, 6, 30);
        w.randomOps(r, 60, 0, size);
        w.verify();
        graph.closeAll();
        assertCheckClean(img);
        assertSameAsRaw(img, model);
    }

    @ParameterizedTest(name = "cluster {0}, backing {1}")
    @CsvSource({"4096,false", "65536,true", "512,false"})
    void overlappingConcurrentRequestsKeepMetadataConsistent(int cs, boolean withBacking) throws Exception {
        // Many threads, all over the same few clusters, with different data: the content is
        // a race by design, but every cluster must be allocated once and counted right, and
        // what we read must be what QEMU reads.
        int size = 2 << 20;
        if (withBacking) {
            ok("qemu-img", "create", "-q", "-f", "qcow2", "base.qcow2", "2M");
            ok("qemu-io", "-f", "qcow2", "-c", "write -P 0x3c 0 2M", "base.qcow2");
        }
        Path img = create("race.qcow2", size, cs, false, withBacking ? "base.qcow2" : null,
                withBacking ? "qcow2" : null);
        BlockNode n = open(img, false);
        List<Thread> threads = new ArrayList<>();
        List<Throwable> errors = java.util.Collections.synchronizedList(new ArrayList<>());
        for (int t = 0; t < 12; t++) {
            long seed = t;
            threads.add(Thread.ofVirtual().name("race-" + t).start(() -> {
                Random r = new Random(seed);
                try {
                    for (int i = 0; i < 150; i++) {
                        long off = r.nextInt(256 * 1024) + (r.nextBoolean() ? 0 : 1 << 20);
                        int len = 1 + r.nextInt(3 * cs);
                        len = (int) Math.min(len, size - off);
                        switch (r.nextInt(6)) {
                            case 0 -> n.writeZeroes(off, len, r.nextBoolean());
                            case 1 -> n.discard(off, len);
                            case 2 -> n.read(off, ByteBuffer.allocate(len));
                            default -> n.write(off, ByteBuffer.wrap(Qcow2Workload.randomBytes(r, len)), false);
                        }
                    }
                } catch (Throwable e) {
                    errors.add(e);
                }
            }));
        }
        for (Thread t : threads) {
            t.join();
        }
        assertThat(errors).isEmpty();
        byte[] mine = new byte[size];
        n.read(0, ByteBuffer.wrap(mine));
        graph.closeAll();
        assertCheckClean(img);
        assertThat(qemuRead(img)).isEqualTo(mine);
    }

    @Test
    void tinyMetadataCacheEvictsAndWritesBackCorrectly() throws Exception {
        // 512-byte clusters and a 2 KiB cache: 4 L2 tables (32 KiB of guest each) and 4
        // refcount blocks, so nearly every request evicts, and dirty tables must survive it.
        int size = 3 << 20;
        Path img = create("tiny.qcow2", size, 512, false, null, null);
        byte[] model = new byte[size];
        try (java.nio.channels.FileChannel ch = java.nio.channels.FileChannel.open(img,
                java.nio.file.StandardOpenOption.READ, java.nio.file.StandardOpenOption.WRITE)) {
            Qcow2Driver d = Qcow2Driver.openOn(null, HostFile.of(ch), false, 2048);
            Random r = new Random(99);
            for (int i = 0; i < 300; i++) {
                int off = r.nextInt(size - 70_000);
                int len = 1 + r.nextInt(70_000);
                if (r.nextInt(5) == 0) {
                    d.discard(off, len);
                    long a = (off + 511L) / 512 * 512;
                    long b = (off + (long) len) / 512 * 512;
                    if (a < b) {
                        Arrays.fill(model, (int) a, (int) b, (byte) 0);
                    }
                } else {
                    byte[] data = Qcow2Workload.randomBytes(r, len);
                    d.write(off, ByteBuffer.wrap(data), false);
                    System.arraycopy(data, 0, model, off, len);
                }
            }
            byte[] back = new byte[size];
            d.read(0, ByteBuffer.wrap(back));
            assertThat(Arrays.mismatch(back, model)).isEqualTo(-1);
            d.close();
        }
        assertCheckClean(img);
        assertSameAsRaw(img, model);
    }

    @Test
    void metadataReachesTheFileSoonWithoutAFlush() throws Exception {
        Path img = create("lazy.qcow2", 4 << 20, 65536, false, null, null);
        BlockNode n = open(img, false);
        byte[] data = Qcow2Workload.randomBytes(new Random(4), 300_000);
        n.write(12345, ByteBuffer.wrap(data), false);
        byte[] model = new byte[4 << 20];
        System.arraycopy(data, 0, model, 12345, data.length);
        Thread.sleep(700); // the background write-back runs 200 ms after the first change
        assertCheckClean(img); // still open, never flushed
        assertSameAsRaw(img, model);
    }

    @Test
    void discardPunchesFreedClustersOutOfTheFile() throws Exception {
        Path img = create("punch.qcow2", 8 << 20, 65536, false, null, null);
        BlockNode n = open(img, false);
        n.write(0, ByteBuffer.wrap(Qcow2Workload.randomBytes(new Random(8), 8 << 20)), false);
        n.flush();
        long before = allocatedBytes(img);
        n.discard(1 << 20, 6 << 20);
        n.flush();
        long after = allocatedBytes(img);
        graph.closeAll();
        assertThat(before - after).isGreaterThanOrEqualTo(5L << 20);
        assertCheckClean(img);
    }

    private long allocatedBytes(Path p) throws Exception {
        Result r = run("stat", "--format=%b %B", p.toString());
        String[] f = r.out().trim().split(" ");
        return Long.parseLong(f[0]) * Long.parseLong(f[1]);
    }

    @Test
    void refcountTableGrowsAndStaysConsistent() throws Exception {
        // 512-byte clusters: one refcount table cluster covers only 64 blocks x 256 clusters,
        // so writing 12 MiB forces the table to move (twice) and blocks to describe themselves.
        int size = 12 << 20;
        Path img = create("grow.qcow2", size, 512, false, null, null);
        BlockNode n = open(img, false);
        byte[] data = Qcow2Workload.randomBytes(new Random(7), size);
        for (int off = 0; off < size; off += 1 << 20) {
            n.write(off, ByteBuffer.wrap(data, off, 1 << 20), false);
        }
        n.discard(1 << 20, 2 << 20);
        Arrays.fill(data, 1 << 20, 3 << 20, (byte) 0);
        graph.closeAll();
        assertCheckClean(img);
        assertSameAsRaw(img, data);
    }

    // ------------------------------------------------------------------ QEMU's images, our reads

    @ParameterizedTest(name = "cluster {0}, compat {1}")
    @CsvSource({"4096,1.1", "65536,1.1", "2097152,1.1", "65536,0.10", "512,0.10"})
    void qemuWrittenImagesReadIdentically(int cs, String compat) throws Exception {
        ok("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=" + cs + ",compat=" + compat,
                "q.qcow2", "4M");
        ok("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 100k", "-c", "write -P 0x22 1000k 5000",
                "-c", "write -P 0x33 3M 1M", "-c", "write -z 3200k 128k", "-c", "discard 3500k 64k",
                "q.qcow2");
        assertThat(ourRead(dir.resolve("q.qcow2"))).isEqualTo(qemuRead(dir.resolve("q.qcow2")));
    }

    @Test
    void zeroClustersFromQemuIoReadAsZeroesAndReportZero() throws Exception {
        ok("qemu-img", "create", "-q", "-f", "qcow2", "b.qcow2", "2M");
        ok("qemu-io", "-f", "qcow2", "-c", "write -P 0x77 0 2M", "b.qcow2");
        ok("qemu-img", "create", "-q", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", "z.qcow2", "2M");
        ok("qemu-io", "-f", "qcow2", "-c", "write -z 64k 128k", "z.qcow2");
        Path z = dir.resolve("z.qcow2");
        assertThat(ourRead(z)).isEqualTo(qemuRead(z));
        BlockNode n = open(z, true);
        assertThat(n.status(65536, 1 << 20).allocation()).isEqualTo(jblockd.block.Allocation.ZERO);
        assertThat(n.status(65536, 1 << 20).length()).isEqualTo(131072);
        assertThat(n.status(0, 1 << 20).allocation()).isEqualTo(jblockd.block.Allocation.UNALLOCATED);
    }

    @Test
    void compressedImageFromConvertReadsIdenticallyAndCanBeOverwritten() throws Exception {
        byte[] raw = new byte[3 << 20];
        Random r = new Random(5);
        for (int i = 0; i < raw.length; i += 512) {
            // compressible but varied content
            Arrays.fill(raw, i, i + 512, (byte) r.nextInt(4));
        }
        r.nextBytes(Arrays.copyOfRange(raw, 0, 0));
        byte[] noise = Qcow2Workload.randomBytes(r, 70000);
        System.arraycopy(noise, 0, raw, 200000, noise.length);
        Files.write(dir.resolve("src.raw"), raw);
        ok("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", "src.raw", "c.qcow2");
        Path c = dir.resolve("c.qcow2");
        assertThat(ourRead(c)).isEqualTo(raw);

        // Overwriting parts of compressed clusters copies them (COW) and frees the old ones.
        BlockNode n = open(c, false);
        byte[] patch = Qcow2Workload.randomBytes(r, 10000);
        n.write(65536 + 300, ByteBuffer.wrap(patch), false);
        System.arraycopy(patch, 0, raw, 65536 + 300, patch.length);
        n.writeZeroes(2 << 20, 65536, true);
        Arrays.fill(raw, 2 << 20, (2 << 20) + 65536, (byte) 0);
        graph.closeAll();
        assertCheckClean(c);
        assertSameAsRaw(c, raw);
    }

    @Test
    void setBackingIsWhatQemuImgInfoAndReadsSee() throws Exception {
        ok("qemu-img", "create", "-q", "-f", "qcow2", "old.qcow2", "2M");
        ok("qemu-io", "-f", "qcow2", "-c", "write -P 0x0a 0 2M", "old.qcow2");
        ok("qemu-img", "create", "-q", "-f", "qcow2", "new.qcow2", "2M");
        ok("qemu-io", "-f", "qcow2", "-c", "write -P 0x0b 0 2M", "new.qcow2");
        for (boolean v2 : new boolean[] {false, true}) {
            Path top = create("top" + v2 + ".qcow2", 2 << 20, 65536, v2, "old.qcow2", "qcow2");
            BlockNode n = open(top, false);
            assertThat(n.driver().backing().driver().filename()).isEqualTo(dir.resolve("old.qcow2").toString());
            n.write(0, ByteBuffer.wrap(new byte[] {1, 2, 3}), false);
            BlockNode newBase = graph.add(graph.imageOptions(dir.resolve("new.qcow2"), "qcow2", true, false, null));
            n.driver().setBacking(newBase, "new.qcow2", "qcow2");
            byte[] mine = new byte[2 << 20];
            n.read(0, ByteBuffer.wrap(mine));
            assertThat(mine[5]).isEqualTo((byte) 0x0a); // copied up with the first write
            assertThat(mine[100_000]).isEqualTo((byte) 0x0b);
            graph.closeAll();
            Result info = run("qemu-img", "info", top.toString());
            assertThat(info.out()).contains("backing file: new.qcow2").contains("backing file format: qcow2");
            assertCheckClean(top);
            assertThat(qemuRead(top)).isEqualTo(mine);

            // Dropping the backing link: the header has no name and no format extension.
            n = open(top, false);
            n.driver().setBacking(null, null, null);
            graph.closeAll();
            assertThat(run("qemu-img", "info", top.toString()).out()).doesNotContain("backing file");
            assertCheckClean(top);
        }
    }

    @Test
    void threeDeepBackingChainReadsLikeQemu() throws Exception {
        ok("qemu-img", "create", "-q", "-f", "qcow2", "l0.qcow2", "4M");
        ok("qemu-io", "-f", "qcow2", "-c", "write -P 0x01 0 4M", "l0.qcow2");
        ok("qemu-img", "create", "-q", "-f", "qcow2", "-b", "l0.qcow2", "-F", "qcow2", "-o", "cluster_size=4096",
                "l1.qcow2", "4M");
        ok("qemu-io", "-f", "qcow2", "-c", "write -P 0x02 1M 1M", "-c", "write -z 1536k 4k", "l1.qcow2");
        ok("qemu-img", "create", "-q", "-f", "qcow2", "-b", "l1.qcow2", "-F", "qcow2", "-o", "compat=0.10",
                "l2.qcow2", "5M");
        ok("qemu-io", "-f", "qcow2", "-c", "write -P 0x03 1500k 100k", "-c", "write -P 0x04 4500k 10k",
                "l2.qcow2");
        Path top = dir.resolve("l2.qcow2");
        assertThat(ourRead(top)).isEqualTo(qemuRead(top));

        // Write through our driver on top of the chain; QEMU agrees with what we read.
        BlockNode n = open(top, false);
        n.write(1_000_000, ByteBuffer.wrap(Qcow2Workload.randomBytes(new Random(3), 300_000)), false);
        n.writeZeroes(3 << 20, 70000, false);
        byte[] mine = new byte[5 << 20];
        n.read(0, ByteBuffer.wrap(mine));
        graph.closeAll();
        assertCheckClean(top);
        assertThat(qemuRead(top)).isEqualTo(mine);
    }
}
