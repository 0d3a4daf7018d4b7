package jblockd.nbd.server;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.util.List;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import jblockd.block.BlockNode;
import jblockd.block.bitmap.BlockDirtyBitmap;
import jblockd.device.Device;
import jblockd.device.GuestIo;
import jblockd.device.RunState;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.QapiEvents;

/** Query parsing of LIST_/SET_META_CONTEXT as QEMU 7.2's nbd_negotiate_meta_queries. */
class MetaContextsTest {
    private NbdExport full;
    private NbdExport plain;

    @BeforeEach
    void exports() throws Exception {
        BlockNode node = new BlockNode("n0", false, new MemDriver(1 << 20, null), false);
        BlockDirtyBitmap b1 = node.bitmaps().create("b1", 65536, false, false, "n0");
        BlockDirtyBitmap b2 = node.bitmaps().create("b2", 65536, true, false, "n0");
        full = export(node, true, List.of(b1, b2));
        plain = export(node, false, List.of());
    }

    private static NbdExport export(BlockNode node, boolean depth, List<BlockDirtyBitmap> bitmaps) throws IOException {
        Device d = new Device("", node, BlockdevOnError.REPORT, BlockdevOnError.REPORT);
        return new NbdExport("e", "e", null, false, new GuestIo(d, new RunState(QapiEvents.NONE, () -> { }),
                QapiEvents.NONE), depth, bitmaps);
    }

    private static List<String> names(MetaContexts m) {
        return m.contexts().stream().map(c -> c.id() + "=" + c.name()).toList();
    }

    @Test
    void listWithoutQueriesNamesEveryContextOfTheExport() {
        assertThat(names(MetaContexts.select(full, true, List.of()))).containsExactly("0=base:allocation",
                "1=qemu:allocation-depth", "2=qemu:dirty-bitmap:b1", "3=qemu:dirty-bitmap:b2");
        assertThat(names(MetaContexts.select(plain, true, List.of()))).containsExactly("0=base:allocation");
    }

    @Test
    void setWithoutQueriesSelectsNothing() {
        assertThat(MetaContexts.select(full, false, List.of()).isEmpty()).isTrue();
    }

    @Test
    void wildcardsListTheirNamespaceButSelectNothing() {
        assertThat(names(MetaContexts.select(full, true, List.of("qemu:")))).containsExactly(
                "1=qemu:allocation-depth", "2=qemu:dirty-bitmap:b1", "3=qemu:dirty-bitmap:b2");
        assertThat(names(MetaContexts.select(full, true, List.of("qemu:dirty-bitmap:")))).containsExactly(
                "2=qemu:dirty-bitmap:b1", "3=qemu:dirty-bitmap:b2");
        assertThat(names(MetaContexts.select(full, true, List.of("base:")))).containsExactly("0=base:allocation");
        assertThat(MetaContexts.select(full, false, List.of("qemu:", "qemu:dirty-bitmap:", "base:")).isEmpty())
                .isTrue();
    }

    @Test
    void repliesComeInIdOrderWhateverTheQueryOrder() {
        MetaContexts m = MetaContexts.select(full, false,
                List.of("qemu:dirty-bitmap:b2", "qemu:allocation-depth", "base:allocation"));
        assertThat(names(m)).containsExactly("0=base:allocation", "1=qemu:allocation-depth", "3=qemu:dirty-bitmap:b2");
    }

    @Test
    void unknownNamesAreSkippedSilently() {
        MetaContexts m = MetaContexts.select(full, false, List.of("qemu:nosuch", "qemu:dirty-bitmap:nob",
                "other:thing", "base:allocationx", "qemu:allocation-depthx", "", "qemu:dirty-bitmap:b1"));
        assertThat(names(m)).containsExactly("2=qemu:dirty-bitmap:b1");
    }

    @Test
    void allocationDepthOnlyWhereTheExportOffersIt() {
        assertThat(MetaContexts.select(plain, false, List.of("qemu:allocation-depth")).isEmpty()).isTrue();
        assertThat(MetaContexts.select(plain, true, List.of("qemu:")).isEmpty()).isTrue();
    }

    @Test
    void aSelectionAppliesOnlyToTheExportItWasMadeOn() {
        MetaContexts m = MetaContexts.select(full, false, List.of("base:allocation"));
        assertThat(m.forExport(full)).isSameAs(m);
        assertThat(m.forExport(plain).isEmpty()).isTrue();
    }
}
