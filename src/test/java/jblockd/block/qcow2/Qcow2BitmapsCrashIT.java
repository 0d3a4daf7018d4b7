package jblockd.block.qcow2;

import static jblockd.block.qcow2.BitmapImages.granules;
import static jblockd.block.qcow2.BitmapImages.ok;
import static org.assertj.core.api.Assertions.assertThat;

import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.Random;
import java.util.TreeSet;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import jblockd.block.bitmap.PersistentBitmapStore;
import jblockd.block.bitmap.StoredBitmap;

/**
 * Power loss while bitmaps are written, simulated as {@link Qcow2CrashIT} does (every write and
 * flush recorded by {@link RecordingFile}, crash images built by {@link CrashReplay}): arming the
 * write-intent record, random guest writes and syncs under it, then the clean store. Every crash
 * image must pass {@code qemu-img check} (leaks allowed), open in QEMU and in jblockd, and every
 * bitmap jblockd loads as consistent must hold every write that had started: once the record is
 * armed, always; during the store's header switch a bitmap may be inconsistent instead (what
 * QEMU leaves after a crash anyway), never wrong.
 */
class Qcow2BitmapsCrashIT {
    private static final long SIZE = 64L << 20;
    /**
     * bm0: 512 B granules (32 sectors of data, 2 MiB a sector; 4 clusters of 4 KiB or one of 64
     * KiB); bm1: 64 KiB; cold: disabled. With 4 KiB clusters the header and all its extensions
     * fit into sector 0 (every header write is atomic); with 64 KiB clusters QEMU's feature name
     * table pushes the extensions past it, which is where the order of the marker writes matters.
     */
    private static final long G0 = 512;
    private static final long G1 = 65536;

    @TempDir
    Path dir;

    @BeforeEach
    void tools() {
        BitmapImages.assumeTools("qemu-img", "qemu-io");
    }

    /** A request and the log events of its data path (after its write-intent marks). */
    private record Op(long off, int len, int start, int end) {
    }

    @ParameterizedTest(name = "seed {0}, cluster {1}")
    @CsvSource({"1,4096", "2,4096", "3,65536", "4,65536", "5,65536"})
    void everyCrashImageKeepsTheBitmapsConsistentOrAtWorstInconsistent(long seed, int cluster) throws Exception {
        Random r = new Random(seed);
        Path img = dir.resolve("c" + seed + ".qcow2");
        ok("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=" + cluster, img.toString(), "64M");
        ok("qemu-img", "bitmap", "--add", "-g", "512", img.toString(), "bm0");
        ok("qemu-img", "bitmap", "--add", "-g", "64k", img.toString(), "bm1");
        ok("qemu-img", "bitmap", "--add", "-g", "64k", "--disable", img.toString(), "cold");
        ok("qemu-io", "-c", "write 1M 8k", "-c", "write 33M 64k", img.toString());

        List<Op> ops = new ArrayList<>();
        BitSet want0;
        BitSet want1;
        BitSet cold;
        BitSet init0;
        BitSet init1;
        byte[] base;
        int armed;
        int storeStart;
        int lateFrom = -1; // "late" joins by a sync half-way: a new directory and record
        int lateStart = -1;
        BitSet late = new BitSet();
        RecordingFile rec;
        try (FileChannel ch = FileChannel.open(img, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            rec = new RecordingFile(HostFile.of(ch));
            long cache = r.nextBoolean() ? 2048 : Metadata.DEFAULT_CACHE_BYTES;
            Qcow2Driver d = Qcow2Driver.openOn(null, rec, false, cache, false);
            PersistentBitmapStore s = d.persistentBitmaps().orElseThrow();
            want0 = find(s, "bm0").bits();
            want1 = find(s, "bm1").bits();
            cold = find(s, "cold").bits();
            init0 = (BitSet) want0.clone();
            init1 = (BitSet) want1.clone();
            base = Files.readAllBytes(img);
            rec.startRecording();
            s.sync(model(want0, want1, cold));
            armed = rec.size();
            for (int i = 0; i < 40; i++) {
                int len = 1 + r.nextInt(r.nextBoolean() ? 4096 : 300_000);
                long off = (long) (r.nextDouble() * (SIZE - len));
                byte[] data = new byte[len];
                r.nextBytes(data);
                // The driver calls the hook itself; called here first, the request's data
                // writes start after the returned (the driver's own call is then a no-op).
                s.beforeWrite(off, len);
                int start = rec.size();
                d.write(off, ByteBuffer.wrap(data), r.nextInt(8) == 0);
                ops.add(new Op(off, len, start, rec.size()));
                want0.or(granules(G0, off, len));
                want1.or(granules(G1, off, len));
                if (lateFrom >= 0) {
                    late.or(granules(G1, off, len));
                }
                int what = r.nextInt(10);
                if (i == 20) {
                    lateStart = rec.size();
                    s.sync(model(want0, want1, cold, late));
                    lateFrom = rec.size();
                } else if (what == 0) {
                    s.sync(model(want0, want1, cold, lateFrom >= 0 ? late : null));
                } else if (what == 1) {
                    d.flush();
                }
            }
            storeStart = rec.size();
            s.store(model(want0, want1, cold, late));
            d.close();
        }
        List<RecordingFile.Event> log = rec.log();

        // Every point around a flush while the record is armed, changes its directory, and is
        // stored (where the order of header writes matters), some at random in between.
        TreeSet<Integer> points = new TreeSet<>();
        List<Integer> others = new ArrayList<>();
        for (int i = 0; i <= log.size(); i++) {
            boolean nearFlush = i < log.size() && log.get(i) instanceof RecordingFile.Flush
                    || i > 0 && log.get(i - 1) instanceof RecordingFile.Flush;
            boolean window = i <= armed + 1 || i >= storeStart || Math.abs(i - lateFrom) < 24;
            if (nearFlush && window) {
                points.add(i);
            } else {
                others.add(i);
            }
        }
        java.util.Collections.shuffle(others, r);
        points.addAll(others.subList(0, Math.min(30, others.size())));
        CrashReplay replay = new CrashReplay(base, log);
        Path crash = dir.resolve("crash.qcow2");
        int consistentAfterStore = 0;
        int inconsistentWhileArmed = 0;
        for (int p : points) {
            long variant = r.nextLong();
            String where = "seed " + seed + ", crash point " + p + " of " + log.size() + " (armed at " + armed
                    + ", store from " + storeStart + "), variant " + variant;
            replay.writeCrashImage(p, new Random(variant), crash);
            BitmapImages.Result check = BitmapImages.check(crash);
            assertThat(check.exit()).as("qemu-img check: %s%n%s", where, check.out()).isIn(0, 3);
            assertThat(BitmapImages.run("qemu-img", "info", "-U", crash.toString()).exit()).as(where).isZero();
            // what had started before the crash (a request's data may have landed in part)
            BitSet started0 = (BitSet) init0.clone();
            BitSet started1 = (BitSet) init1.clone();
            BitSet startedLate = new BitSet();
            for (Op op : ops) {
                if (op.start < p) {
                    started0.or(granules(G0, op.off, op.len));
                    started1.or(granules(G1, op.off, op.len));
                    if (op.start >= lateFrom) {
                        startedLate.or(granules(G1, op.off, op.len));
                    }
                }
            }
            try (BitmapImages.Opened o = BitmapImages.open(crash, true)) {
                // The record is off only while a header write changes more than sector 0:
                // the sync that adds "late" (with 64 KiB clusters) and the store's switch.
                boolean inWindow = p > lateStart && p < lateFrom;
                boolean mustBeConsistent = p >= armed && p <= storeStart && !inWindow;
                if (inWindow && o.loaded("bm0").inconsistent()) {
                    inconsistentWhileArmed++;
                }
                check(o.loaded("bm0"), started0, mustBeConsistent, where);
                check(o.loaded("bm1"), started1, mustBeConsistent, where);
                check(o.loaded("cold"), cold, mustBeConsistent, where);
                if (p >= lateFrom) {
                    check(o.loaded("late"), startedLate, mustBeConsistent, where);
                }
                if (p > storeStart && !o.loaded("bm0").inconsistent()) {
                    consistentAfterStore++;
                }
            }
        }
        assertThat(consistentAfterStore).as("crash images during the store that still recover").isPositive();
        if (cluster > 4096) {
            assertThat(inconsistentWhileArmed).as("crash images in the marker's off window").isPositive();
        }
        try (BitmapImages.Opened o = BitmapImages.open(img, true)) {
            assertThat(o.loaded("bm0").bits()).isEqualTo(want0);
            assertThat(o.loaded("bm1").bits()).isEqualTo(want1);
            assertThat(o.loaded("cold").bits()).isEqualTo(cold);
            assertThat(o.loaded("late").bits()).isEqualTo(late);
        }
    }

    private static void check(StoredBitmap b, BitSet started, boolean mustBeConsistent, String where) {
        if (b.inconsistent()) {
            assertThat(mustBeConsistent).as("%s: bitmap %s inconsistent while the record was armed", where, b.name())
                    .isFalse();
            return;
        }
        BitSet missing = (BitSet) started.clone();
        missing.andNot(b.bits());
        assertThat(missing.isEmpty()).as("%s: bitmap %s misses granules %s", where, b.name(), missing).isTrue();
    }

    private static List<StoredBitmap> model(BitSet b0, BitSet b1, BitSet cold) {
        return model(b0, b1, cold, null);
    }

    private static List<StoredBitmap> model(BitSet b0, BitSet b1, BitSet cold, BitSet late) {
        List<StoredBitmap> l = new ArrayList<>(List.of(BitmapImages.bitmap("bm0", G0, SIZE, true, (BitSet) b0.clone()),
                BitmapImages.bitmap("bm1", G1, SIZE, true, (BitSet) b1.clone()),
                BitmapImages.bitmap("cold", G1, SIZE, false, (BitSet) cold.clone())));
        if (late != null) {
            l.add(BitmapImages.bitmap("late", G1, SIZE, true, (BitSet) late.clone()));
        }
        return l;
    }

    private static StoredBitmap find(PersistentBitmapStore s, String name) {
        return s.loaded().stream().filter(b -> b.name().equals(name)).findFirst().orElseThrow();
    }
}
