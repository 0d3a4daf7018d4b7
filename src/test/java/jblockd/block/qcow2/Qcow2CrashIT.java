package jblockd.block.qcow2;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import java.util.TreeSet;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.BlockNode;
import jblockd.block.DriverRegistry;
import jblockd.block.NodeGraph;
import jblockd.testsupport.ExternalTools;

/**
 * Crash simulation for our qcow2 code (the ALICE / CrashMonkey method): a {@link RecordingFile}
 * under the driver logs every write and flush of a random allocating workload (COW from a
 * backing file and from compressed clusters, discard, write-zeroes, L2 table and refcount block
 * allocation, refcount table growth, tiny caches that force write-back), then every crash image
 * is built: the writes covered by the last completed flush, plus a random subset, in random
 * order and cut into 512-byte sectors, of the writes after it. Each image must pass
 * {@code qemu-img check} (leaks allowed, no corruption) and read back, through our driver, every
 * write that was acknowledged with FUA or followed by a completed flush.
 * <p>
 * What a byte may read as after the crash: the value of the last request covering it that had
 * to be durable (a flushed one, or a FUA write), or the value of any later request that
 * covered it and had started (an unflushed write may land in part, in any order).
 * <p>
 * CI runs {@link #CI_SEEDS}, chosen so that removing any one of Metadata's flush barriers fails
 * one of them (seed 1: L2 write-back or frees without their flush; 2: an L1 entry before its
 * new L2 table; 9 and 13: a refcount table entry before its new block) and two grow the
 * refcount table; {@code -Djblockd.crash.long=true} runs {@code jblockd.crash.seeds}
 * (default 100) more, and {@code -Djblockd.crash.seed=N} just seed N (bin/qcow2-crash-sim).
 */
class Qcow2CrashIT {
    private static final long[] CI_SEEDS = {1, 2, 3, 6, 9, 13};

    @TempDir
    Path dir;

    @BeforeEach
    void tools() {
        ExternalTools.assumeTools("qemu-img", "qemu-io");
    }

    @Test
    void everyCrashImageIsConsistentAndKeepsDurableWrites() throws Exception {
        Long only = Long.getLong("jblockd.crash.seed");
        assumeTrue(only == null && !Boolean.getBoolean("jblockd.crash.long"),
                "a single seed or the long mode was asked for");
        int images = 0;
        boolean grewTable = false;
        for (long seed : CI_SEEDS) {
            Outcome o = simulate(seed, 60, 35);
            images += o.crashImages;
            grewTable |= o.grewRefcountTable;
            report(seed, o);
        }
        // The workloads reach what they are meant to exercise.
        assertThat(grewTable).as("some CI seed grows the refcount table").isTrue();
        assertThat(images).isGreaterThan(100);
    }

    private static void report(long seed, Outcome o) {
        System.out.printf("qcow2 crash simulation: seed %d: %d crash images of %d flushes%s%n", seed,
                o.crashImages, o.flushes, o.grewRefcountTable ? ", refcount table grew" : "");
    }

    @Test
    void longMode() throws Exception {
        Long only = Long.getLong("jblockd.crash.seed");
        assumeTrue(only != null || Boolean.getBoolean("jblockd.crash.long"),
                "long mode: -Djblockd.crash.long=true (or -Djblockd.crash.seed=N)");
        long first = only != null ? only : Long.getLong("jblockd.crash.firstSeed", 1000);
        int seeds = only != null ? 1 : Integer.getInteger("jblockd.crash.seeds", 100);
        int images = 0;
        for (long seed = first; seed < first + seeds; seed++) {
            Outcome o = simulate(seed, 80, 120);
            images += o.crashImages;
            report(seed, o);
        }
        System.out.printf("qcow2 crash simulation: %d seeds, %d crash images, all consistent%n", seeds, images);
    }

    record Outcome(int crashImages, int flushes, boolean grewRefcountTable) {
    }

    private enum Kind { WRITE, ZEROES, DISCARD, FLUSH }

    /** One request and the log indices it spans: its writes are log events {@code [start, end)}. */
    private record Op(Kind kind, long off, long len, byte[] data, boolean fua, int start, int end) {
    }

    /** The image under test and how requests read back (the model of {@link Qcow2Workload}). */
    private record Image(Path path, Path backing, byte[] backingData, int clusterSize, boolean v3, long size,
                         int refcountBits) {
        @Override
        public String toString() {
            return String.format("%s cluster %d, refcount bits %d, %s, size %d, %s", path.getFileName(), clusterSize,
                    refcountBits, v3 ? "v3" : "v2", size, backing == null ? "no backing"
                            : "raw backing of " + backingData.length + " bytes");
        }

        /** The guest bytes {@code [from, to)} a request sets (a discard: its whole clusters). */
        long[] range(Op op) {
            return switch (op.kind) {
                case WRITE, ZEROES -> new long[] {op.off, op.off + op.len};
                case DISCARD -> {
                    long end = op.off + op.len;
                    long a = (op.off + clusterSize - 1) / clusterSize * clusterSize;
                    long z = end >= size ? (end + clusterSize - 1) / clusterSize * clusterSize
                            : end / clusterSize * clusterSize;
                    yield new long[] {a, Math.max(a, Math.min(z, size))};
                }
                case FLUSH -> new long[] {0, 0};
            };
        }

        /** Sets the bytes a request sets, as it sets them. */
        void apply(Op op, byte[] into) {
            long[] r = range(op);
            int from = (int) r[0];
            int to = (int) r[1];
            if (op.kind == Kind.WRITE) {
                System.arraycopy(op.data, 0, into, from, to - from);
            } else if (op.kind == Kind.DISCARD && !v3 && backingData != null) {
                Arrays.fill(into, from, to, (byte) 0);
                System.arraycopy(backingData, Math.min(from, backingData.length), into, from,
                        Math.max(0, Math.min(to, backingData.length) - from));
            } else {
                Arrays.fill(into, from, to, (byte) 0);
            }
        }

        byte value(Op op, long b) {
            return switch (op.kind) {
                case WRITE -> op.data[(int) (b - op.off)];
                case DISCARD -> !v3 && backingData != null && b < backingData.length ? backingData[(int) b] : 0;
                default -> 0;
            };
        }
    }

    private Outcome simulate(long seed, int opCount, int maxCrashPoints) throws Exception {
        Random r = new Random(seed);
        Image im = createImage(seed, r);
        NodeGraph graph = new NodeGraph(DriverRegistry.standard());
        List<Op> ops = new ArrayList<>();
        byte[] base;
        byte[] initial;
        long tableBefore;
        RecordingFile rec;
        try (FileChannel ch = FileChannel.open(im.path, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            rec = new RecordingFile(HostFile.of(ch));
            long cache = r.nextBoolean() ? 2048 : Metadata.DEFAULT_CACHE_BYTES; // tiny: write-back under pressure
            Qcow2Driver d = Qcow2Driver.openOn(null, rec, false, cache, false);
            try {
                if (im.backing != null) {
                    BlockNode b = graph.add(graph.imageOptions(im.backing, "raw", true, false, null));
                    d.setBacking(b, im.backing.toString(), "raw");
                }
                initial = new byte[(int) im.size];
                d.read(0, ByteBuffer.wrap(initial));
                d.flush();
                base = Files.readAllBytes(im.path);
                tableBefore = ByteBuffer.wrap(base).getLong(48);
                rec.startRecording();
                for (int i = 0; i < opCount; i++) {
                    ops.add(randomOp(r, d, rec, im, ops));
                }
                int s = rec.size();
                d.flush();
                ops.add(new Op(Kind.FLUSH, 0, 0, null, false, s, rec.size()));
            } finally {
                d.close();
                graph.closeAll();
            }
        }
        List<RecordingFile.Event> log = rec.log();
        long tableAfter = ByteBuffer.wrap(Files.readAllBytes(im.path)).getLong(48);

        // Crash points, the most telling first: just before each flush that follows writes
        // (everything since the previous flush unstable: where a missing barrier shows), the
        // flushed state just before the next write (the strictest durability check of it),
        // points at random in between; then in log order.
        List<Integer> before = new ArrayList<>();
        List<Integer> after = new ArrayList<>();
        List<Integer> between = new ArrayList<>();
        int flushes = 0;
        int lastFlush = -1;
        boolean wroteSince = false;
        for (int i = 0; i < log.size(); i++) {
            if (log.get(i) instanceof RecordingFile.Flush) {
                flushes++;
                if (wroteSince) {
                    before.add(i);
                    if (i - lastFlush > 2) {
                        between.add(lastFlush + 2 + r.nextInt(i - lastFlush - 2));
                    }
                }
                wroteSince = false;
                lastFlush = i;
            } else {
                if (!wroteSince && lastFlush >= 0) {
                    after.add(i);
                }
                wroteSince = true;
            }
        }
        after.add(log.size());
        TreeSet<Integer> chosen = new TreeSet<>();
        take(chosen, before, maxCrashPoints * 3 / 5, r);
        take(chosen, after, maxCrashPoints / 4, r);
        take(chosen, between, maxCrashPoints - chosen.size(), r);
        take(chosen, before, maxCrashPoints - chosen.size(), r);
        take(chosen, after, maxCrashPoints - chosen.size(), r);
        CrashReplay replay = new CrashReplay(base, log);
        Path crash = dir.resolve("crash.qcow2");
        for (int p : chosen) {
            long variantSeed = r.nextLong();
            String where = "seed " + seed + ", crash point " + p + " of " + log.size()
                    + " log events, unstable-subset seed " + variantSeed + " (" + im + ")";
            replay.writeCrashImage(p, new Random(variantSeed), crash);
            ExternalTools.Result check = ExternalTools.run("qemu-img", "check", "-f", "qcow2", crash.toString());
            assertThat(check.exit()).as("qemu-img check exit (0 clean, 3 leaks only): %s%n%s", where,
                    checkSummary(check.out())).isIn(0, 3);
            verifyDurable(im, initial, ops, p, crash, where);
        }
        return new Outcome(chosen.size(), flushes, tableAfter != tableBefore);
    }

    /** Adds up to {@code n} of {@code from} (chosen at random) that {@code to} does not hold yet. */
    private static void take(TreeSet<Integer> to, List<Integer> from, int n, Random r) {
        List<Integer> c = new ArrayList<>(from);
        Collections.shuffle(c, r);
        for (int i = 0, added = 0; i < c.size() && added < n; i++) {
            if (to.add(c.get(i))) {
                added++;
            }
        }
    }

    /** The first index at or after {@code from} where the arrays differ, or -1. */
    private static int mismatchFrom(byte[] a, byte[] b, int from) {
        if (from >= a.length) {
            return -1;
        }
        int m = Arrays.mismatch(a, from, a.length, b, from, b.length);
        return m < 0 ? -1 : from + m;
    }

    /** qemu-img check's errors (not its many leak lines) and its summary. */
    private static String checkSummary(String out) {
        String[] lines = out.split("\n");
        List<String> keep = new ArrayList<>();
        for (String l : lines) {
            if (l.startsWith("ERROR") && keep.size() < 8) {
                keep.add(l);
            }
        }
        keep.addAll(Arrays.asList(lines).subList(Math.max(0, lines.length - 4), lines.length));
        return String.join("\n", keep);
    }

    private Image createImage(long seed, Random r) throws Exception {
        int cs = r.nextInt(3) == 0 ? 4096 : 512;
        boolean v3 = r.nextInt(4) != 0;
        // 64-bit refcounts with 512-byte clusters: a refcount block covers 32 KiB and the
        // one-cluster table 2 MiB of file, so the workload grows the table.
        int refcountBits = v3 && r.nextInt(3) != 0 ? 64 : 16;
        long size = cs == 512 ? 3L << 20 : 8L << 20;
        Path img = dir.resolve("s" + seed + ".qcow2");
        Files.deleteIfExists(img);
        Path backing = null;
        byte[] backingData = null;
        List<String> create = new ArrayList<>(List.of("qemu-img", "create", "-q", "-f", "qcow2", "-o",
                "cluster_size=" + cs + ",refcount_bits=" + refcountBits + ",compat=" + (v3 ? "1.1" : "0.10")));
        if (r.nextInt(3) != 0) {
            backing = dir.resolve("s" + seed + ".raw");
            // Sometimes shorter than the image: past its end the guest reads zeroes.
            backingData = Qcow2Workload.randomBytes(r, (int) (r.nextBoolean() ? size : size - 300_000));
            Files.write(backing, backingData);
            create.addAll(List.of("-b", backing.toString(), "-F", "raw"));
        }
        create.addAll(List.of(img.toString(), Long.toString(size)));
        ExternalTools.ok(create.toArray(String[]::new));
        // Some compressed clusters (COW of those frees their host clusters) and some plain data.
        List<String> io = new ArrayList<>(List.of("qemu-io", "-f", "qcow2"));
        // Compressed writes first, each in a 16-cluster slot of its own: QEMU writes compressed
        // clusters only where nothing is allocated yet (else EIO).
        List<Integer> slots = new ArrayList<>();
        for (int i = 0; i < size / (16L * cs); i++) {
            slots.add(i);
        }
        Collections.shuffle(slots, r);
        for (int i = 0; i < 6; i++) {
            boolean compressed = i < 3;
            long off = compressed ? slots.get(i) * 16L * cs : (long) r.nextInt((int) (size / cs) - 16) * cs;
            int clusters = 1 + r.nextInt(16);
            String pattern = "0x" + Integer.toHexString(0x10 + r.nextInt(0xe0));
            io.addAll(List.of("-c", (compressed ? "write -c -P " : "write -P ") + pattern + " " + off + " "
                    + (long) clusters * cs));
        }
        if (refcountBits == 64 && cs == 512) {
            // Fill the file close to what the one-cluster refcount table covers (2 MiB), so the
            // workload's allocations grow the table.
            long fill = 1600L << 10;
            long off = (long) r.nextInt((int) ((size - fill) / cs)) * cs;
            io.addAll(List.of("-c", "write -P 0x5c " + off + " " + fill));
        }
        if (r.nextBoolean()) {
            // One sector in every L2 table's range: the workload's allocations then go into
            // existing tables (no L2 allocation, with its flush, on the way).
            long l2Range = (long) cs * (cs / 8);
            for (long off = 0; off < size; off += l2Range) {
                io.addAll(List.of("-c", "write -P 0x33 " + off + " 512"));
            }
        }
        io.add(img.toString());
        ExternalTools.ok(io.toArray(String[]::new));
        return new Image(img, backing, backingData, cs, v3, size, refcountBits);
    }

    private static Op randomOp(Random r, Qcow2Driver d, RecordingFile rec, Image im, List<Op> ops)
            throws IOException {
        int cs = im.clusterSize;
        long off;
        long len;
        int shape = r.nextInt(10);
        if (shape < 3) { // a few clusters, aligned
            off = (long) r.nextInt((int) (im.size / cs)) * cs;
            len = (long) (1 + r.nextInt(16)) * cs;
        } else if (shape < 6) { // unaligned and small: copy-on-write at both ends
            off = r.nextInt((int) im.size);
            len = 1 + r.nextInt(3 * cs);
        } else if (shape < 8) { // large: L2 tables, refcount blocks, refcount table growth
            off = r.nextInt((int) im.size);
            len = 1 + r.nextInt(r.nextBoolean() ? 64 * 1024 : 640 * 1024);
        } else { // inside an earlier write: in-place overwrite of clusters allocated before
            Op prior = null;
            for (int k = ops.size() - 1; k >= 0 && prior == null; k -= 1 + r.nextInt(3)) {
                if (ops.get(k).kind == Kind.WRITE) {
                    prior = ops.get(k);
                }
            }
            if (prior == null) {
                off = 0;
                len = cs;
            } else {
                off = prior.off + r.nextInt((int) prior.len);
                len = 1 + r.nextInt((int) (prior.off + prior.len - off));
            }
        }
        len = Math.min(len, im.size - off);
        int kind = r.nextInt(100);
        int start = rec.size();
        if (kind < 60) {
            byte[] data = Qcow2Workload.randomBytes(r, (int) len);
            boolean fua = r.nextInt(6) == 0;
            d.write(off, ByteBuffer.wrap(data), fua);
            return new Op(Kind.WRITE, off, len, data, fua, start, rec.size());
        } else if (kind < 72) {
            d.writeZeroes(off, len, r.nextBoolean());
            return new Op(Kind.ZEROES, off, len, null, false, start, rec.size());
        } else if (kind < 86) {
            d.discard(off, len);
            return new Op(Kind.DISCARD, off, len, null, false, start, rec.size());
        } else {
            d.flush();
            return new Op(Kind.FLUSH, 0, 0, null, false, start, rec.size());
        }
    }

    /**
     * Reads the crash image with our driver and checks every byte: the last request covering it
     * that had to be durable at crash point {@code p}, or any later one that had started.
     */
    private static void verifyDurable(Image im, byte[] initial, List<Op> ops, int p, Path crash, String where)
            throws Exception {
        int lastFlush = -1;
        for (int j = 0; j < ops.size(); j++) {
            if (ops.get(j).kind == Kind.FLUSH && ops.get(j).end <= p) {
                lastFlush = j;
            }
        }
        byte[] expected = new byte[(int) im.size];
        byte[] actual = new byte[(int) im.size];
        NodeGraph g = new NodeGraph(DriverRegistry.standard());
        try {
            BlockNode n = g.add(g.imageOptions(crash, "qcow2", true, false, null));
            n.read(0, ByteBuffer.wrap(actual));
        } finally {
            g.closeAll();
        }
        // expected: the initial content with the durable requests applied; lastDurable: per
        // byte, the index of the durable request that wrote it last.
        int[] lastDurable = new int[(int) im.size];
        Arrays.fill(lastDurable, -1);
        System.arraycopy(initial, 0, expected, 0, expected.length);
        long[][] ranges = new long[ops.size()][];
        for (int j = 0; j < ops.size(); j++) {
            Op op = ops.get(j);
            ranges[j] = im.range(op);
            boolean durable = j < lastFlush || (op.fua && op.end <= p);
            if (durable && op.kind != Kind.FLUSH) {
                im.apply(op, expected);
                Arrays.fill(lastDurable, (int) ranges[j][0], (int) ranges[j][1], j);
            }
        }
        int b = -1;
        while ((b = mismatchFrom(actual, expected, b + 1)) >= 0) {
            boolean later = false;
            for (int j = lastDurable[b] + 1; j < ops.size() && !later; j++) {
                Op op = ops.get(j);
                later = op.start < p && b >= ranges[j][0] && b < ranges[j][1] && im.value(op, b) == actual[b];
            }
            if (!later) {
                StringBuilder touching = new StringBuilder();
                for (int j = 0; j < ops.size(); j++) {
                    if (b >= ranges[j][0] && b < ranges[j][1]) {
                        Op op = ops.get(j);
                        touching.append(String.format("%n  #%d %s off %d len %d fua %b log [%d, %d)%s", j, op.kind,
                                op.off, op.len, op.fua, op.start, op.end, j == lastDurable[b] ? " <- durable" : ""));
                    }
                }
                int wrong = 0;
                int c0 = b / im.clusterSize * im.clusterSize;
                for (int k = c0; k < Math.min(actual.length, c0 + im.clusterSize); k++) {
                    wrong += actual[k] != expected[k] ? 1 : 0;
                }
                throw new AssertionError(String.format("%s: guest byte %d (cluster %d) reads 0x%02x, durable value"
                        + " 0x%02x, and no later request wrote that (%d bytes of the cluster differ); requests"
                        + " covering it:%s", where, b, b / im.clusterSize, actual[b], expected[b], wrong, touching));
            }
        }
    }
}
