package jblockd.block.qcow2;

import static jblockd.block.qcow2.BitmapImages.bitmap;
import static jblockd.block.qcow2.BitmapImages.granules;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.List;
import java.util.Random;
import java.util.logging.Handler;
import java.util.logging.LogRecord;
import java.util.logging.Logger;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.FormatSpecific;
import jblockd.block.ImageCreator;
import jblockd.block.IoError;
import jblockd.block.bitmap.PersistentBitmapStore;
import jblockd.block.bitmap.PersistentBitmapStore.BitmapStoreException;
import jblockd.block.bitmap.StoredBitmap;

/** Persistent bitmaps on images jblockd made itself: the rules that need no QEMU to check. */
class Qcow2BitmapsTest {
    private static final long MIB = 1 << 20;
    private static final long G64K = 65536;

    @TempDir
    Path dir;

    private Path create(String name, long size, int clusterSize, boolean v2) throws IOException {
        Path p = dir.resolve(name);
        Qcow2Creator.create(new ImageCreator.Options(p, size, null, null, clusterSize, v2));
        return p;
    }

    /** An image holding bm0 (64 KiB, enabled, two writes) and cold (1 MiB, disabled, empty). */
    private Path imageWithBitmaps() throws IOException {
        Path p = create("a.qcow2", 32 * MIB, 65536, false);
        try (BitmapImages.Opened o = BitmapImages.open(p, false)) {
            o.store().store(List.of(bitmap("bm0", G64K, 32 * MIB, true, granules(G64K, 0, 1, 20 * MIB, 200_000)),
                    bitmap("cold", MIB, 32 * MIB, false, new BitSet())));
        }
        return p;
    }

    @Test
    void storedBitmapsLoadBackWithTheirBitsAndFlags() throws Exception {
        Path p = imageWithBitmaps();
        try (BitmapImages.Opened o = BitmapImages.open(p, true)) {
            assertThat(o.store().loaded()).extracting(StoredBitmap::name).containsExactly("bm0", "cold");
            assertThat(o.loaded("bm0").bits()).isEqualTo(granules(G64K, 0, 1, 20 * MIB, 200_000));
            assertThat(o.loaded("bm0").enabled()).isTrue();
            assertThat(o.loaded("cold").enabled()).isFalse();
            assertThat(o.loaded("cold").granularity()).isEqualTo(MIB);
            FormatSpecific.Qcow2 f = (FormatSpecific.Qcow2) o.driver().formatSpecific().orElseThrow();
            assertThat(f.bitmaps()).containsExactly(new FormatSpecific.Qcow2Bitmap("bm0", G64K, List.of("auto")),
                    new FormatSpecific.Qcow2Bitmap("cold", MIB, List.of()));
        }
    }

    @Test
    void v2ImagesRefuseBitmapsWithQemusText() throws Exception {
        Path p = create("v2.qcow2", 4 * MIB, 65536, true);
        try (BitmapImages.Opened o = BitmapImages.open(p, false)) {
            PersistentBitmapStore s = o.store();
            assertThat(s.loaded()).isEmpty();
            assertThatThrownBy(() -> s.checkCanStore("b", G64K, List.of())).isInstanceOf(BitmapStoreException.class)
                    .hasMessage("Cannot store dirty bitmaps in qcow2 v2 files")
                    .satisfies(e -> assertThat(((BitmapStoreException) e).prefixed()).isTrue());
            assertThatThrownBy(() -> s.store(List.of(bitmap("b", G64K, 4 * MIB, true, new BitSet()))))
                    .isInstanceOf(IoError.class).hasMessage("Cannot store dirty bitmaps in qcow2 v2 files");
            s.store(List.of()); // nothing to store is fine
        }
    }

    @Test
    void checkCanStoreGivesQemusReasons() throws Exception {
        Path p = create("c.qcow2", 4 * MIB, 65536, false);
        try (BitmapImages.Opened o = BitmapImages.open(p, false)) {
            PersistentBitmapStore s = o.store();
            s.checkCanStore("ok", 512, List.of("a", "b"));
            assertThatThrownBy(() -> s.checkCanStore("a", G64K, List.of("a")))
                    .hasMessage("Bitmap already exists: a")
                    .satisfies(e -> assertThat(((BitmapStoreException) e).prefixed()).isFalse());
            assertThatThrownBy(() -> s.checkCanStore("g", 256, List.of()))
                    .hasMessage("Granularity is under minimum (512 bytes)");
            assertThatThrownBy(() -> s.checkCanStore("g", 1L << 32, List.of()))
                    .hasMessage("Granularity exceeds maximum (2147483648 bytes)");
            assertThatThrownBy(() -> s.checkCanStore("x".repeat(1024), G64K, List.of()))
                    .hasMessage("Name length exceeds maximum (1023 characters)");
            List<String> many = new ArrayList<>();
            for (int i = 0; i < 65535; i++) {
                many.add("b" + i);
            }
            assertThatThrownBy(() -> s.checkCanStore("one-more", G64K, many))
                    .hasMessage("Maximum number of persistent bitmaps is already reached");
            // 1023-byte names take 1048-byte entries: 64036 of them pass QEMU's 1024 * 65535 bytes
            List<String> longNames = new ArrayList<>();
            for (int i = 0; i < 64035; i++) {
                longNames.add(String.format("%01023d", i));
            }
            assertThatThrownBy(() -> s.checkCanStore("y".repeat(1023), G64K, longNames))
                    .hasMessage("Not enough space in the bitmap directory");
        }
    }

    @Test
    void aDirectoryEntryWithABadGranularityRefusesTheOpenAndLeavesTheImageAlone() throws Exception {
        Path p = imageWithBitmaps();
        long[] ext = BitmapImages.bitmapsExtension(p);
        BitmapImages.patch(p, ext[2] + 17, new byte[] {40});
        byte[] before = Files.readAllBytes(p);
        assertThatThrownBy(() -> BitmapImages.open(p, false)).isInstanceOf(IoError.class)
                .hasMessage("Could not open qcow2 image: Bitmap 'bm0' doesn't satisfy the constraints");
        assertThat(Files.readAllBytes(p)).isEqualTo(before);
        BitmapImages.patch(p, ext[2] + 17, new byte[] {16});
        BitmapImages.patch(p, 0x1f8 + 8, ByteBuffer.allocate(4).putInt(0, 3).array()); // nb_bitmaps 3
        assertThatThrownBy(() -> BitmapImages.open(p, true))
                .hasMessage("Could not open qcow2 image: Less bitmaps found than specified in header extension");
    }

    @Test
    void inconsistentEntriesStayByteForByteAcrossStoresUntilRemoved() throws Exception {
        Path p = imageWithBitmaps();
        long[] ext = BitmapImages.bitmapsExtension(p);
        BitmapImages.patch(p, ext[2] + 12, ByteBuffer.allocate(4).putInt(0, 3).array()); // bm0: in_use | auto
        byte[] entry = BitmapImages.read(p, ext[2], 32);
        try (BitmapImages.Opened o = BitmapImages.open(p, false)) {
            StoredBitmap bm0 = o.loaded("bm0");
            assertThat(bm0.inconsistent()).isTrue();
            assertThat(bm0.bits().isEmpty()).isTrue();
            assertThatThrownBy(() -> o.store().checkCanStore("bm0", G64K, List.of()))
                    .hasMessage("Bitmap already exists: bm0");
            assertThatThrownBy(() -> o.store().store(List.of(bitmap("bm0", G64K, 32 * MIB, true, new BitSet()))))
                    .hasMessage("Bitmap 'bm0' already exists in the image");
            o.store().store(List.of(o.loaded("cold"), bitmap("new", G64K, 32 * MIB, true, granules(G64K, 0, 1))));
        }
        long[] after = BitmapImages.bitmapsExtension(p);
        assertThat(after[0]).isEqualTo(3);
        assertThat(BitmapImages.read(p, after[2], 32)).as("the inconsistent entry, first as before").isEqualTo(entry);
        try (BitmapImages.Opened o = BitmapImages.open(p, false)) {
            assertThat(o.store().loaded()).extracting(StoredBitmap::name).containsExactly("bm0", "cold", "new");
            assertThat(o.loaded("bm0").inconsistent()).isTrue();
            o.store().remove("bm0");
            assertThat(o.store().loaded()).hasSize(3); // loaded() is what the open found
            o.store().checkCanStore("bm0", G64K, List.of("cold", "new"));
        }
    }

    @Test
    void aWriteAfterAStoreMarksTheBitmapsInUseAgainFirst() throws Exception {
        Path p = imageWithBitmaps();
        try (BitmapImages.Opened o = BitmapImages.open(p, false)) {
            o.store().store(o.store().loaded());
            assertThat(flags(o)).containsExactly(List.of("auto"), List.of());
            o.write(MIB, 4096, 1);
            assertThat(flags(o)).containsExactly(List.of("in-use", "auto"), List.of("in-use"));
            o.crash();
        }
        try (BitmapImages.Opened o = BitmapImages.open(p, true)) {
            assertThat(o.store().loaded()).extracting(StoredBitmap::inconsistent).containsExactly(true, true);
        }
    }

    @Test
    void bitmapsWithoutAutoclearBitZeroAreDroppedWithQemusWarning() throws Exception {
        Path p = imageWithBitmaps();
        BitmapImages.patch(p, 88, new byte[8]); // a program lacking bitmap support cleared it
        List<String> warnings = new ArrayList<>();
        Logger log = Logger.getLogger(Qcow2Bitmaps.class.getName());
        Handler h = new Handler() {
            @Override
            public void publish(LogRecord r) {
                warnings.add(r.getMessage());
            }

            @Override
            public void flush() {
            }

            @Override
            public void close() {
            }
        };
        log.addHandler(h);
        try {
            try (BitmapImages.Opened o = BitmapImages.open(p, true)) {
                assertThat(o.store().loaded()).isEmpty();
            }
            assertThat(BitmapImages.bitmapsExtension(p)).as("read-only: untouched").isNotNull();
            try (BitmapImages.Opened o = BitmapImages.open(p, false)) {
                assertThat(o.store().loaded()).isEmpty();
                assertThat(((FormatSpecific.Qcow2) o.driver().formatSpecific().orElseThrow()).bitmaps()).isNull();
            }
            assertThat(BitmapImages.bitmapsExtension(p)).as("read-write: the extension is dropped").isNull();
        } finally {
            log.removeHandler(h);
        }
        assertThat(warnings).hasSize(2).allSatisfy(w -> assertThat(w).endsWith(Qcow2Bitmaps.LACKING_SUPPORT));
    }

    @Test
    void aReadWriteOpenClearsEveryOtherAutoclearBit() throws Exception {
        Path p = imageWithBitmaps();
        BitmapImages.patch(p, 88, ByteBuffer.allocate(8).putLong(0, 1 | 2 | 1L << 40 | 1L << 63).array());
        try (BitmapImages.Opened o = BitmapImages.open(p, true)) {
            assertThat(o.store().loaded()).hasSize(2);
        }
        assertThat(BitmapImages.autoclear(p)).isEqualTo(1 | 2 | 1L << 40 | 1L << 63);
        try (BitmapImages.Opened o = BitmapImages.open(p, false)) {
            assertThat(o.loaded("bm0").inconsistent()).isFalse(); // bit 63 alone vouches for nothing
        }
        assertThat(BitmapImages.autoclear(p)).isEqualTo(1);
    }

    /**
     * The write-intent mark fails: the record is given up durably (its marker cleared) and the
     * write goes on; a crash then leaves the bitmaps inconsistent, as QEMU would, never stale.
     */
    @Test
    void aFailedMarkTurnsTheRecordOffAndTheWriteProceeds() throws Exception {
        Path p = imageWithBitmaps();
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            FailingFile f = new FailingFile(HostFile.of(ch));
            Qcow2Driver d = Qcow2Driver.openOn(null, f, false, Metadata.DEFAULT_CACHE_BYTES, false);
            PersistentBitmapStore s = d.persistentBitmaps().orElseThrow();
            s.sync(s.loaded());
            assertThat(BitmapImages.autoclear(p)).isEqualTo(1 | Qcow2Header.AUTOCLEAR_JBLOCKD_INTENT);
            f.failFlushes = true; // the mark's flush fails, the disarm's first one too
            assertThatThrownBy(() -> d.write(8 * MIB, ByteBuffer.allocate(4096), false)).isInstanceOf(IOException.class);
            f.failFlushes = false;
            f.failNextFlushes = 1; // the mark's flush fails, the disarm works
            d.write(8 * MIB, ByteBuffer.allocate(4096), false);
            assertThat(BitmapImages.autoclear(p)).isEqualTo(1);
            d.write(16 * MIB, ByteBuffer.allocate(4096), false); // no record, no mark: no flush needed
        }
        try (BitmapImages.Opened o = BitmapImages.open(p, true)) {
            assertThat(o.store().loaded()).extracting(StoredBitmap::inconsistent).containsExactly(true, true);
        }
    }

    /**
     * Many writers at once (the lock-free check, announced marks committed together) while
     * another thread syncs: after a crash the bitmap holds every write that returned.
     */
    @Test
    void concurrentWritersAndSyncsLoseNoWriteInACrash() throws Exception {
        Path p = create("m.qcow2", 64 * MIB, 65536, false);
        long g = 512; // 2 MiB regions: 32 of them
        try (BitmapImages.Opened o = BitmapImages.open(p, false)) {
            o.store().store(List.of(bitmap("fine", g, 64 * MIB, true, new BitSet())));
        }
        BitSet written = new BitSet();
        try (BitmapImages.Opened o = BitmapImages.open(p, false)) {
            PersistentBitmapStore s = o.store();
            s.sync(s.loaded());
            List<Thread> writers = new ArrayList<>();
            for (int w = 0; w < 16; w++) {
                long seed = w;
                writers.add(Thread.ofVirtual().start(() -> {
                    Random r = new Random(seed);
                    try {
                        for (int i = 0; i < 60; i++) {
                            long off = (long) r.nextInt((int) (64 * MIB / 4096)) * 4096;
                            o.driver().write(off, ByteBuffer.allocate(4096), false);
                            synchronized (written) {
                                written.or(granules(g, off, 4096));
                            }
                        }
                    } catch (IOException e) {
                        throw new java.io.UncheckedIOException(e);
                    }
                }));
            }
            for (int k = 0; k < 10; k++) {
                BitSet now;
                synchronized (written) {
                    now = (BitSet) written.clone();
                }
                s.sync(List.of(bitmap("fine", g, 64 * MIB, true, now)));
            }
            for (Thread t : writers) {
                t.join();
            }
            o.crash();
        }
        try (BitmapImages.Opened o = BitmapImages.open(p, true)) {
            BitSet missing = (BitSet) written.clone();
            missing.andNot(o.loaded("fine").bits());
            assertThat(o.loaded("fine").inconsistent()).isFalse();
            assertThat(missing.isEmpty()).as("missing granules %s", missing).isTrue();
        }
    }

    /**
     * Bits a sync adds that no request brought (a merge into the bitmap) are durable when sync
     * returns: every crash image from then on holds them.
     */
    @Test
    void bitsASyncAddsAreDurableWhenItReturns() throws Exception {
        Path p = create("g.qcow2", 64 * MIB, 65536, false);
        long g = 512;
        try (BitmapImages.Opened o = BitmapImages.open(p, false)) {
            o.store().store(List.of(bitmap("m", g, 64 * MIB, true, new BitSet())));
        }
        BitSet merged = granules(g, 40 * MIB, 1, 3 * MIB, 70_000);
        RecordingFile rec;
        byte[] base;
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            rec = new RecordingFile(HostFile.of(ch));
            Qcow2Driver d = Qcow2Driver.openOn(null, rec, false, Metadata.DEFAULT_CACHE_BYTES, false);
            PersistentBitmapStore s = d.persistentBitmaps().orElseThrow();
            s.sync(s.loaded());
            rec.flush();
            base = Files.readAllBytes(p);
            rec.startRecording();
            s.sync(List.of(bitmap("m", g, 64 * MIB, true, merged)));
        }
        CrashReplay replay = new CrashReplay(base, rec.log());
        Path crash = dir.resolve("crash.qcow2");
        Random r = new Random(3);
        for (int variant = 0; variant < 30; variant++) {
            replay.writeCrashImage(rec.log().size(), new Random(r.nextLong()), crash);
            try (BitmapImages.Opened o = BitmapImages.open(crash, true)) {
                BitSet missing = (BitSet) merged.clone();
                missing.andNot(o.loaded("m").bits());
                assertThat(missing.isEmpty()).as("variant %d misses %s", variant, missing).isTrue();
            }
        }
    }

    /**
     * Metadata.writeHeader's rule: while the marker is set on disk, nothing past sector 0 of
     * cluster 0 changes; so in every crash image of a header rewrite that does change it, a set
     * marker sits next to the complete old rest or the complete new one.
     */
    @Test
    void theIntentMarkerIsNeverDurableNextToAHalfWrittenHeader() throws Exception {
        Path p = create("h.qcow2", 4 * MIB, 65536, false);
        byte[] base;
        RecordingFile rec;
        byte[] oldRest;
        byte[] newRest;
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            rec = new RecordingFile(HostFile.of(ch));
            Qcow2Header h = Qcow2Header.parse(readCluster0(ch), ch.size());
            Metadata m = new Metadata(rec, h);
            m.lock.lock();
            try {
                h.setExtension(0x12345678, filled(1500, 1)); // spans sectors 1 to 4
                h.autoclear = 1 | Qcow2Header.AUTOCLEAR_JBLOCKD_INTENT;
                m.writeHeader();
                rec.flush();
                oldRest = Arrays.copyOfRange(h.serialize(), 512, 65536);
                base = Files.readAllBytes(p);
                rec.startRecording();
                h.setExtension(0x12345678, filled(2000, 2));
                m.writeHeader();
                rec.flush();
                newRest = Arrays.copyOfRange(h.serialize(), 512, 65536);
            } finally {
                m.lock.unlock();
            }
        }
        List<RecordingFile.Event> log = rec.log();
        assertThat(log.stream().filter(e -> e instanceof RecordingFile.Flush).count()).isGreaterThanOrEqualTo(3);
        CrashReplay replay = new CrashReplay(base, log);
        Path crash = dir.resolve("crash.qcow2");
        Random r = new Random(7);
        for (int point = 0; point <= log.size(); point++) {
            for (int variant = 0; variant < 40; variant++) {
                replay.writeCrashImage(point, new Random(r.nextLong()), crash);
                byte[] c0 = BitmapImages.read(crash, 0, 65536);
                boolean marker = (ByteBuffer.wrap(c0).getLong(88) & Qcow2Header.AUTOCLEAR_JBLOCKD_INTENT) != 0;
                byte[] rest = Arrays.copyOfRange(c0, 512, 65536);
                if (marker) {
                    assertThat(Arrays.equals(rest, oldRest) || Arrays.equals(rest, newRest))
                            .as("crash point %d: the marker next to a mixed header", point).isTrue();
                }
            }
        }
    }

    private static byte[] filled(int n, int v) {
        byte[] b = new byte[n];
        Arrays.fill(b, (byte) v);
        return b;
    }

    private static ByteBuffer readCluster0(FileChannel ch) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(65536);
        ch.read(b, 0);
        b.flip();
        return b;
    }

    private static List<List<String>> flags(BitmapImages.Opened o) throws IOException {
        return ((FormatSpecific.Qcow2) o.driver().formatSpecific().orElseThrow()).bitmaps().stream()
                .map(FormatSpecific.Qcow2Bitmap::flags).toList();
    }

    /** A host file whose flushes fail on demand (a disk that stops confirming writes). */
    private static final class FailingFile implements HostFile {
        private final HostFile inner;
        volatile boolean failFlushes;
        volatile int failNextFlushes;

        FailingFile(HostFile inner) {
            this.inner = inner;
        }

        @Override
        public void read(long offset, ByteBuffer dst) throws IOException {
            inner.read(offset, dst);
        }

        @Override
        public void write(long offset, ByteBuffer src) throws IOException {
            inner.write(offset, src);
        }

        @Override
        public void flush() throws IOException {
            if (failFlushes || failNextFlushes > 0) {
                failNextFlushes--;
                throw new IoError(jblockd.block.Errno.EIO, "flush failed (injected)");
            }
            inner.flush();
        }

        @Override
        public long length() throws IOException {
            return inner.length();
        }
    }
}
