package jblockd.nbd.server;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Test;

import jblockd.block.bitmap.DirtyBitmap;

/** The extents of one BLOCK_STATUS chunk, as QEMU's NBDExtentArray and bitmap_to_extents build them. */
class ExtentListTest {
    private static final long K = 1024;
    private static final long G = 64 * K; // bitmap granularity

    private static List<String> runs(ExtentList l) {
        List<String> out = new ArrayList<>();
        for (int i = 0; i < l.count(); i++) {
            out.add(l.length(i) + ":" + l.flags(i));
        }
        return out;
    }

    @Test
    void runsOfEqualFlagsMerge() {
        ExtentList l = new ExtentList(8);
        l.add(4096, 0);
        l.add(4096, 0);
        l.add(0, 3); // nothing
        l.add(8192, 3);
        assertThat(runs(l)).containsExactly("8192:0", "8192:3");
        assertThat(l.total()).isEqualTo(16384);
    }

    @Test
    void aRunThatDoesNotFitFillsTheListAndTheReplyCoversLess() {
        ExtentList l = new ExtentList(2);
        assertThat(l.add(10, 0)).isTrue();
        assertThat(l.add(10, 1)).isTrue();
        assertThat(l.add(10, 1)).isTrue(); // merges
        assertThat(l.add(10, 0)).isFalse();
        assertThat(l.full()).isTrue();
        assertThat(runs(l)).containsExactly("10:0", "20:1");
    }

    @Test
    void dirtyGranulesBecomeDirtyRunsClippedToTheRequest() {
        DirtyBitmap bits = new DirtyBitmap(1024 * K, G);
        bits.mark(G + 5, 1); // granule 1
        bits.mark(3 * G, 2 * G); // granules 3, 4
        ExtentList l = ExtentList.forRequest(false);
        l.addBitmap(bits, 0, 1024 * K, 1);
        assertThat(runs(l)).containsExactly(G + ":0", G + ":1", G + ":0", 2 * G + ":1", (1024 * K - 5 * G) + ":0");
    }

    @Test
    void aDirtyGranuleStraddlingTheRequestEndIsCutAtTheEnd() {
        DirtyBitmap bits = new DirtyBitmap(1024 * K, G);
        bits.mark(G, 1); // granule [64K, 128K)
        ExtentList l = ExtentList.forRequest(false);
        l.addBitmap(bits, 0, 96 * K, 1);
        assertThat(runs(l)).containsExactly(G + ":0", 32 * K + ":1");
    }

    @Test
    void aRequestStartingInsideADirtyGranuleStartsDirtyAtItsOffset() {
        DirtyBitmap bits = new DirtyBitmap(1024 * K, G);
        bits.mark(G, 1);
        ExtentList l = ExtentList.forRequest(false);
        l.addBitmap(bits, 80 * K, 120 * K, 1);
        assertThat(runs(l)).containsExactly(48 * K + ":1", 72 * K + ":0");
    }

    @Test
    void theLastGranuleOfAnExportNotAMultipleOfTheGranularityEndsAtTheExportEnd() {
        long size = 100 * K; // granule 1 is [64K, 100K)
        DirtyBitmap bits = new DirtyBitmap(size, G);
        bits.mark(70 * K, K);
        ExtentList l = ExtentList.forRequest(false);
        l.addBitmap(bits, 0, size, 1);
        assertThat(runs(l)).containsExactly(G + ":0", 36 * K + ":1");
        assertThat(l.total()).isEqualTo(size);
    }

    @Test
    void beyondTheBitmapsLengthIsClean() {
        DirtyBitmap bits = new DirtyBitmap(2 * G, G); // a bitmap of a shorter backing node
        bits.markAll();
        ExtentList l = ExtentList.forRequest(false);
        l.addBitmap(bits, G, 3 * G, 1);
        assertThat(runs(l)).containsExactly(G + ":1", 2 * G + ":0");
    }

    @Test
    void reqOneGivesOneExtentStartingAtTheOffset() {
        DirtyBitmap bits = new DirtyBitmap(1024 * K, G);
        bits.mark(2 * G, 2 * G);
        ExtentList clean = ExtentList.forRequest(true);
        clean.addBitmap(bits, 0, 1024 * K, 1);
        assertThat(runs(clean)).containsExactly(2 * G + ":0");
        ExtentList dirty = ExtentList.forRequest(true);
        dirty.addBitmap(bits, 2 * G + 4096, 1024 * K - 2 * G - 4096, 1);
        assertThat(runs(dirty)).containsExactly((2 * G - 4096) + ":1");
        ExtentList allClean = ExtentList.forRequest(true);
        allClean.addBitmap(new DirtyBitmap(1024 * K, G), 0, 1024 * K, 1);
        assertThat(runs(allClean)).containsExactly(1024 * K + ":0");
    }

    @Test
    void aMaximalRequestIsOneRunOfUpToFourGiB() {
        ExtentList l = ExtentList.forRequest(false);
        l.add(0xffffffffL - 10, 0);
        l.add(10, 0);
        assertThat(runs(l)).containsExactly("4294967295:0");
        assertThat(l.toPairs()).containsExactly(-1, 0); // u32 0xffffffff on the wire
    }
}
