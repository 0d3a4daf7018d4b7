package jblockd.block.bitmap;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.BitSet;
import java.util.List;

import org.junit.jupiter.api.Test;

import jblockd.block.BlockNode;

/**
 * The per-node bitmaps (QEMU block/dirty-bitmap.c): list order, QEMU's refusals, the
 * freeze / abdicate / reclaim life cycle jobs use, and the persistence wiring against a store
 * in memory.
 */
class NodeBitmapsTest {
    private static final int SIZE = 1 << 20;
    private static final long G = 65536;

    private static BlockNode node(TestDisk disk) {
        return new BlockNode("n0", false, disk, false);
    }

    private static BlockNode node() {
        return node(new TestDisk(SIZE));
    }

    private static void write(BlockNode n, long offset, int len) throws IOException {
        n.write(offset, ByteBuffer.allocate(len), false);
    }

    private static List<String> names(NodeBitmaps b) {
        return b.list().stream().map(x -> x.name() == null ? "(anon)" : x.name()).toList();
    }

    @Test
    void bitmapsAreListedNewestFirstAndNamesAreUniquePerNode() throws Exception {
        BlockNode n = node();
        NodeBitmaps bm = n.bitmaps();
        bm.create("b0", G, false, false, "n0");
        bm.create("b1", 512, false, false, "n0");
        bm.create("b2", G, true, false, "n0");
        assertThat(names(bm)).containsExactly("b2", "b1", "b0");
        assertThatThrownBy(() -> bm.create("b1", G, false, false, "n0"))
                .isInstanceOf(BitmapException.class).hasMessage("Bitmap already exists: b1");
        bm.remove(bm.find("b1").orElseThrow());
        bm.create("b3", G, false, false, "n0");
        assertThat(names(bm)).containsExactly("b3", "b2", "b0");
        // the same name on another node is fine
        node().bitmaps().create("b0", G, false, false, "other");
    }

    @Test
    void namesOfUpTo1023BytesAreAccepted() throws Exception {
        NodeBitmaps bm = node().bitmaps();
        bm.create("x".repeat(1023), G, false, false, "n0");
        String tooLong = "é".repeat(512); // 1024 bytes of UTF-8
        assertThatThrownBy(() -> bm.create(tooLong, G, false, false, "n0"))
                .isInstanceOf(BitmapException.class).hasMessage("Bitmap name too long: " + tooLong);
    }

    @Test
    void writesMarkEnabledBitmapsOnlyAndCountsAreWholeGranules() throws Exception {
        BlockNode n = node();
        NodeBitmaps bm = n.bitmaps();
        BlockDirtyBitmap on = bm.create("on", G, false, false, "n0");
        BlockDirtyBitmap off = bm.create("off", G, true, false, "n0");
        write(n, 100, 1);
        n.writeZeroes(3 * G, 10, false);
        assertThat(on.count()).isEqualTo(2 * G);
        assertThat(off.count()).isZero();
        assertThat(on.info()).isEqualTo(new BlockDirtyBitmap.Info("on", true, false, false, G, 2 * G, false));
        assertThat(off.info().recording()).isFalse();
        bm.setEnabled(off, true);
        bm.setEnabled(off, true); // enabling an enabled bitmap: {}
        write(n, 5 * G, 1);
        assertThat(off.count()).isEqualTo(G);
        assertThat(on.count()).isEqualTo(3 * G);
        bm.setEnabled(on, false);
        write(n, 7 * G, 1);
        assertThat(on.count()).as("a disabled bitmap keeps its bits and ignores writes").isEqualTo(3 * G);
        bm.clear(on);
        assertThat(on.count()).isZero();
    }

    /**
     * The lock-free path for writes into granules every recording bitmap has dirty already must
     * not keep a write from a bitmap that lacks it: not the one enabled later, not a cleared
     * one, not the successor of a frozen one.
     */
    @Test
    void aRewriteOfDirtyGranulesStillMarksEveryBitmapThatLacksThem() throws Exception {
        BlockNode n = node();
        NodeBitmaps bm = n.bitmaps();
        BlockDirtyBitmap a = bm.create("a", G, false, false, "n0");
        write(n, 0, 2 * (int) G);
        write(n, 0, 2 * (int) G); // all dirty: the fast path
        assertThat(a.count()).isEqualTo(2 * G);
        BlockDirtyBitmap b = bm.create("b", G, false, false, "n0");
        write(n, 0, 1);
        assertThat(b.count()).as("a new bitmap still gets the rewrite").isEqualTo(G);
        bm.clear(a);
        write(n, G, 1);
        assertThat(a.count()).as("a cleared bitmap gets it again").isEqualTo(G);
        BlockDirtyBitmap successor = bm.freeze(a);
        write(n, G, 1);
        assertThat(successor.count()).as("the successor of a frozen bitmap gets it").isEqualTo(G);
    }

    @Test
    void freezeMakesTheBitmapBusyAndItsSuccessorRecordsInItsPlace() throws Exception {
        BlockNode n = node();
        NodeBitmaps bm = n.bitmaps();
        BlockDirtyBitmap other = bm.create("other", G, false, false, "n0");
        BlockDirtyBitmap b0 = bm.create("b0", G, false, false, "n0");
        write(n, 0, 3 * (int) G);
        BlockDirtyBitmap successor = bm.freeze(b0);
        assertThat(names(bm)).containsExactly("(anon)", "b0", "other");
        assertThat(b0.busy()).isTrue();
        assertThat(b0.frozen()).isTrue();
        assertThat(b0.recording()).as("recording through its successor").isTrue();
        assertThat(b0.enabled()).isFalse();
        assertThat(successor.name()).isNull();
        assertThat(successor.enabled()).isTrue();
        write(n, 8 * G, 1);
        assertThat(b0.count()).as("frozen bits do not change").isEqualTo(3 * G);
        assertThat(successor.count()).isEqualTo(G);
        assertThat(other.count()).isEqualTo(4 * G);
        // every QMP use of a busy bitmap is refused with QEMU's text
        String busy = "Bitmap 'b0' is currently in use by another operation and cannot be used";
        assertThatThrownBy(() -> bm.clear(b0)).hasMessage(busy);
        assertThatThrownBy(() -> bm.setEnabled(b0, false)).hasMessage(busy);
        assertThatThrownBy(() -> bm.remove(b0)).hasMessage(busy);
        assertThatThrownBy(() -> bm.merge(b0, List.of(other))).hasMessage(busy);
        assertThatThrownBy(() -> bm.merge(other, List.of(b0))).as("also as a merge source").hasMessage(busy);
        assertThatThrownBy(() -> bm.freeze(b0))
                .hasMessage("Cannot create a successor for a bitmap that is in-use by an operation");
        assertThatThrownBy(() -> bm.release(b0)).isInstanceOf(IllegalStateException.class);
        assertThat(b0.count()).isEqualTo(3 * G);
    }

    @Test
    void abdicateKeepsOnlyWritesSinceTheFreezeUnderTheOldName() throws Exception {
        BlockNode n = node(new TestDisk(SIZE, false, 1, 0, new FakeStore(false)));
        NodeBitmaps bm = n.bitmaps();
        BlockDirtyBitmap b0 = bm.create("b0", G, false, true, "n0");
        write(n, 0, 3 * (int) G);
        BlockDirtyBitmap successor = bm.freeze(b0);
        write(n, 10 * G, 1);
        BlockDirtyBitmap after = bm.abdicate(b0);
        assertThat(after).isSameAs(successor);
        assertThat(names(bm)).containsExactly("b0");
        assertThat(after.name()).isEqualTo("b0");
        assertThat(after.persistent()).isTrue();
        assertThat(after.busy()).isFalse();
        assertThat(after.count()).isEqualTo(G);
        assertThat(bm.find("b0")).containsSame(after);
        write(n, 12 * G, 1);
        assertThat(after.count()).isEqualTo(2 * G);
        assertThatThrownBy(() -> bm.abdicate(after))
                .hasMessage("Cannot relinquish control if there's no successor present");
    }

    @Test
    void reclaimMergesTheSuccessorBackAndRecordsAgain() throws Exception {
        BlockNode n = node();
        NodeBitmaps bm = n.bitmaps();
        BlockDirtyBitmap b0 = bm.create("b0", G, false, false, "n0");
        write(n, 0, 3 * (int) G);
        bm.freeze(b0);
        write(n, 10 * G, 1);
        assertThat(bm.reclaim(b0)).isSameAs(b0);
        assertThat(names(bm)).containsExactly("b0");
        assertThat(b0.busy()).isFalse();
        assertThat(b0.enabled()).isTrue();
        assertThat(b0.count()).isEqualTo(4 * G); // 196608 + one new granule, as bitmaps.md §6
        write(n, 11 * G, 1);
        assertThat(b0.count()).isEqualTo(5 * G);
        assertThatThrownBy(() -> bm.reclaim(b0)).hasMessage("Cannot reclaim a successor when none is present");
    }

    @Test
    void aDisabledBitmapFreezesWithADisabledSuccessor() throws Exception {
        // libvirt's temporary bitmap: created disabled, merged into, then used by a backup
        BlockNode n = node();
        NodeBitmaps bm = n.bitmaps();
        BlockDirtyBitmap tmp = bm.create("backup-vda", G, true, false, "n0");
        BlockDirtyBitmap successor = bm.freeze(tmp);
        assertThat(successor.enabled()).isFalse();
        assertThat(tmp.recording()).isFalse();
        write(n, 0, 1);
        assertThat(successor.count()).isZero();
        bm.reclaim(tmp);
        assertThat(tmp.enabled()).isFalse();
    }

    @Test
    void exportedBitmapsAreBusyWithoutASuccessor() throws Exception {
        NodeBitmaps bm = node().bitmaps();
        BlockDirtyBitmap b = bm.create("b", G, false, false, "n0");
        bm.setBusy(b, true);
        assertThat(b.info().busy()).isTrue();
        assertThat(b.frozen()).isFalse();
        assertThatThrownBy(() -> bm.remove(b)).hasMessageContaining("currently in use");
        bm.setBusy(b, false);
        bm.remove(b);
        assertThat(bm.isEmpty()).isTrue();
    }

    @Test
    void anonymousBitmapsAreListedWithoutANameAndReleasedByTheirJob() throws Exception {
        BlockNode n = node();
        NodeBitmaps bm = n.bitmaps();
        BlockDirtyBitmap copy = bm.createAnonymous(G, false);
        copy.bits().markAll();
        assertThat(copy.info()).isEqualTo(new BlockDirtyBitmap.Info(null, false, false, false, G, SIZE, false));
        assertThat(bm.find("x")).isEmpty();
        bm.release(copy);
        assertThat(bm.isEmpty()).isTrue();
    }

    @Test
    void mergeIsAllOrNothing() throws Exception {
        BlockNode n = node();
        BlockNode other = new BlockNode("n1", false, new TestDisk(2 * SIZE), false);
        NodeBitmaps bm = n.bitmaps();
        BlockDirtyBitmap target = bm.create("t", G, true, false, "n0");
        BlockDirtyBitmap a = bm.create("a", 4096, false, false, "n0");
        write(n, 4096, 1);
        BlockDirtyBitmap big = other.bitmaps().create("big", G, false, false, "n1");
        assertThatThrownBy(() -> bm.merge(target, List.of(a, big)))
                .hasMessage("Bitmaps are of different sizes (destination size is 1048576, source size is 2097152)"
                        + " and can't be merged");
        assertThat(target.count()).isZero();
        bm.merge(target, List.of(a)); // into a disabled target, across granularities
        assertThat(target.count()).isEqualTo(G);
    }

    @Test
    void theRecordingHookOfANodeWithoutBitmapsDoesNothing() throws Exception {
        BlockNode n = node();
        write(n, 0, 4096); // no bitmap: nothing to mark, nothing allocated
        assertThat(n.bitmaps().isEmpty()).isTrue();
        BlockDirtyBitmap b = n.bitmaps().create("late", G, false, false, "n0");
        assertThat(b.count()).as("writes before the bitmap existed are not in it").isZero();
    }

    // ---- persistence wiring against a store in memory ----

    private static BitSet bits(int... set) {
        BitSet b = new BitSet();
        for (int i : set) {
            b.set(i);
        }
        return b;
    }

    @Test
    void storedBitmapsAreLoadedAtCreationInReverseDirectoryOrder() {
        FakeStore store = new FakeStore(false,
                new StoredBitmap("first", G, SIZE, true, false, bits(0, 2)),
                new StoredBitmap("second", 4096, SIZE, false, false, bits(1)),
                new StoredBitmap("broken", G, SIZE, true, true, new BitSet()));
        BlockNode n = node(new TestDisk(SIZE, false, 1, 0, store));
        NodeBitmaps bm = n.bitmaps();
        assertThat(names(bm)).containsExactly("broken", "second", "first");
        assertThat(bm.find("first").orElseThrow().info())
                .isEqualTo(new BlockDirtyBitmap.Info("first", true, true, false, G, 2 * G, false));
        assertThat(bm.find("second").orElseThrow().info())
                .isEqualTo(new BlockDirtyBitmap.Info("second", false, true, false, 4096, 4096, false));
        assertThat(bm.find("broken").orElseThrow().info())
                .isEqualTo(new BlockDirtyBitmap.Info("broken", false, true, false, G, 0, true));
        assertThat(bm.store()).containsSame(store);
    }

    @Test
    void inconsistentBitmapsCanOnlyBeRemovedOrHashed() throws Exception {
        FakeStore store = new FakeStore(false, new StoredBitmap("bm0", G, SIZE, true, true, new BitSet()));
        BlockNode n = node(new TestDisk(SIZE, false, 1, 0, store));
        NodeBitmaps bm = n.bitmaps();
        BlockDirtyBitmap bm0 = bm.find("bm0").orElseThrow();
        BlockDirtyBitmap t = bm.create("t", G, false, false, "n0");
        String text = "Bitmap 'bm0' is inconsistent and cannot be used";
        assertThatThrownBy(() -> bm.clear(bm0)).hasMessage(text);
        assertThatThrownBy(() -> bm.setEnabled(bm0, true)).hasMessage(text);
        assertThatThrownBy(() -> bm.setEnabled(bm0, false)).hasMessage(text);
        assertThatThrownBy(() -> bm.merge(bm0, List.of(t))).hasMessage(text);
        assertThatThrownBy(() -> bm.merge(t, List.of(bm0))).hasMessage(text);
        write(n, 0, 1);
        assertThat(bm0.count()).as("not recording").isZero();
        assertThat(bm0.bits().sha256()).hasSize(64);
        bm.remove(bm0);
        assertThat(store.removed).containsExactly("bm0");
    }

    @Test
    void bitmapsOfAReadOnlyStoreAreReadonlyButMayBeEnabledAndDisabled() throws Exception {
        FakeStore store = new FakeStore(true, new StoredBitmap("pb", G, SIZE, true, false, bits(3)),
                new StoredBitmap("pd", G, SIZE, false, false, new BitSet()));
        BlockNode n = new BlockNode("ro", false, new TestDisk(SIZE, false, 1, 0, store), true);
        NodeBitmaps bm = n.bitmaps();
        BlockDirtyBitmap pb = bm.find("pb").orElseThrow();
        BlockDirtyBitmap pd = bm.find("pd").orElseThrow();
        assertThat(pb.readonly()).isTrue();
        assertThat(pb.recording()).isTrue();
        String ro = "Bitmap 'pb' is readonly and cannot be modified";
        assertThatThrownBy(() -> bm.clear(pb)).hasMessage(ro);
        assertThatThrownBy(() -> bm.remove(pb)).hasMessage(ro);
        assertThatThrownBy(() -> bm.merge(pb, List.of(pd))).hasMessage(ro);
        bm.setEnabled(pb, false);
        bm.setEnabled(pd, true);
        assertThat(pb.recording()).isFalse();
        assertThat(pd.recording()).isTrue();
        BlockDirtyBitmap t = bm.create("t", G, false, false, "ro"); // non-persistent: fine
        bm.merge(t, List.of(pb)); // a read-only source is fine
        assertThat(t.count()).isEqualTo(G);
        n.close();
        assertThat(store.stores).as("nothing is stored into a read-only image").isEmpty();
    }

    @Test
    void persistentAddAsksTheStoreAndUsesQemusTexts() throws Exception {
        FakeStore store = new FakeStore(false, new StoredBitmap("old", G, SIZE, true, false, new BitSet()));
        NodeBitmaps bm = node(new TestDisk(SIZE, false, 1, 0, store)).bitmaps();
        bm.create("p1", G, false, true, "drive0");
        assertThat(store.checkedWith).containsExactly(List.of("old"));
        bm.create("p2", G, false, true, "drive0");
        assertThat(store.checkedWith.get(1)).containsExactly("p1", "old");
        store.refuse = "Cannot store dirty bitmaps in qcow2 v2 files";
        assertThatThrownBy(() -> bm.create("p3", G, false, true, "drive0"))
                .hasMessage("Can't make bitmap 'p3' persistent in 'drive0': Cannot store dirty bitmaps in qcow2 v2 files");
        assertThat(bm.find("p3")).isEmpty();
        // without a store
        assertThatThrownBy(() -> node().bitmaps().create("p", G, false, true, "raw"))
                .hasMessage("Can't store persistent bitmaps to raw: Operation not supported");
    }

    @Test
    void persistentAddOnAReadOnlyImageIsRefusedWhereQemuWouldLoseIt() {
        FakeStore store = new FakeStore(true);
        NodeBitmaps bm = new BlockNode("ro", false, new TestDisk(SIZE, false, 1, 0, store), true).bitmaps();
        assertThatThrownBy(() -> bm.create("p", G, false, true, "ro"))
                .hasMessage("Can't make bitmap 'p' persistent in 'ro': the image is opened read-only, so the bitmap"
                        + " could never be stored");
        assertThat(bm.isEmpty()).isTrue();
    }

    @Test
    void removeOfAPersistentBitmapLeavesTheImageAtOnceAndAFailureKeepsIt() throws Exception {
        FakeStore store = new FakeStore(false, new StoredBitmap("a", G, SIZE, true, false, new BitSet()));
        NodeBitmaps bm = node(new TestDisk(SIZE, false, 1, 0, store)).bitmaps();
        BlockDirtyBitmap plain = bm.create("plain", G, false, false, "n0");
        bm.remove(plain);
        assertThat(store.removed).isEmpty();
        store.failRemove = new IOException("No space left on device");
        BlockDirtyBitmap a = bm.find("a").orElseThrow();
        assertThatThrownBy(() -> bm.remove(a)).hasMessage("Failed to remove bitmap 'a' from 'n0': No space left on device");
        assertThat(bm.find("a")).containsSame(a);
        store.failRemove = null;
        bm.remove(a);
        assertThat(store.removed).containsExactly("a");
        assertThat(bm.isEmpty()).isTrue();
    }

    @Test
    void aCleanCloseStoresTheConsistentPersistentBitmapsBeforeTheDriverCloses() throws Exception {
        FakeStore store = new FakeStore(false,
                new StoredBitmap("loaded", G, SIZE, true, false, bits(1)),
                new StoredBitmap("broken", G, SIZE, true, true, new BitSet()));
        TestDisk disk = new TestDisk(SIZE, false, 1, 0, store);
        BlockNode n = node(disk);
        NodeBitmaps bm = n.bitmaps();
        bm.create("plain", G, false, false, "n0");
        BlockDirtyBitmap p = bm.create("p", 4096, true, true, "n0");
        BlockDirtyBitmap frozen = bm.find("loaded").orElseThrow();
        write(n, 0, 1);
        bm.merge(p, List.of(bm.find("plain").orElseThrow()));
        bm.freeze(frozen);
        write(n, 5 * G, 1); // lands in the successor only
        n.close();
        assertThat(disk.closed).isTrue();
        assertThat(store.stores).hasSize(1);
        List<StoredBitmap> stored = store.stores.getFirst();
        assertThat(stored).extracting(StoredBitmap::name).containsExactly("p", "loaded");
        StoredBitmap sp = stored.get(0);
        assertThat(sp.granularity()).isEqualTo(4096);
        assertThat(sp.enabled()).isFalse();
        assertThat(sp.inconsistent()).isFalse();
        assertThat(sp.length()).isEqualTo(SIZE);
        assertThat(sp.bits()).isEqualTo(bits(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
        StoredBitmap sl = stored.get(1);
        assertThat(sl.enabled()).isTrue();
        assertThat(sl.bits()).as("frozen bits plus the successor's").isEqualTo(bits(0, 1, 5));
        n.close();
        assertThat(store.stores).as("once").hasSize(1);
    }

    @Test
    void aStoreFailureAtCloseStillClosesTheNode() throws Exception {
        FakeStore store = new FakeStore(false);
        TestDisk disk = new TestDisk(SIZE, false, 1, 0, store);
        BlockNode n = node(disk);
        n.bitmaps().create("p", G, false, true, "n0");
        store.failStore = new IOException("No space left on device");
        n.close();
        assertThat(disk.closed).isTrue();
        assertThat(n.isClosed()).isTrue();
    }
}
