package jblockd.block;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The filename rules of reference/filenames.md §1–§4 without a daemon. */
class FilenamesTest {
    private final Filenames filenames = new Filenames(DriverRegistry.standard(), Filenames.NO_JSON);
    private final BlockdevOptions.Common common = BlockdevOptions.Common.defaults();

    @TempDir
    Path tmp;

    @Test
    void aProtocolIsAColonBeforeAnySlash() {
        assertThat(Filenames.hasProtocol("foo:bar")).isTrue();
        assertThat(Filenames.hasProtocol("json:{\"a\":\"/x\"}")).isTrue();
        assertThat(Filenames.hasProtocol("/srv/a:b.raw")).isFalse();
        assertThat(Filenames.hasProtocol("./a:b.raw")).isFalse();
        assertThat(Filenames.hasProtocol("plain.raw")).isFalse();
        assertThat(Filenames.protocolOf("nbd+unix:///e?socket=s")).isEqualTo("nbd+unix");
    }

    @Test
    void backingNamesAreRelativeToTheOverlaysDirectoryUnlessPrefixed() {
        assertThat(Filenames.backingFilename("sub/y.qcow2", "../base.qcow2")).isEqualTo("sub/../base.qcow2");
        assertThat(Filenames.backingFilename("/d/ov.qcow2", "base.qcow2")).isEqualTo("/d/base.qcow2");
        assertThat(Filenames.backingFilename("ov.qcow2", "base.qcow2")).isEqualTo("base.qcow2");
        assertThat(Filenames.backingFilename("/d/ov.qcow2", "/abs/b.qcow2")).isEqualTo("/abs/b.qcow2");
        assertThat(Filenames.backingFilename("/d/ov.qcow2", "file:b.qcow2")).isEqualTo("file:b.qcow2");
        assertThat(Filenames.backingFilename("/d/ov.qcow2", "json:{}")).isEqualTo("json:{}");
    }

    @Test
    void protocolsParseTheirStrings() throws Exception {
        assertThat(filenames.protocolOptions("file:a:b.raw", common))
                .isEqualTo(new BlockdevOptions.File(common, "a:b.raw"));
        assertThat(filenames.protocolOptions("./a:b.raw", common)).isEqualTo(new BlockdevOptions.File(common, "./a:b.raw"));
        BlockdevOptions bd = filenames.protocolOptions("blkdebug::file:x.raw", common);
        assertThat(bd).isInstanceOfSatisfying(BlockdevOptions.Blkdebug.class, b -> {
            assertThat(b.config()).isNull();
            assertThat(b.image()).isEqualTo(new BlockdevRef.Inline(new BlockdevOptions.File(common, "x.raw")));
        });
        assertThat(filenames.protocolOptions("null-co://", common)).isInstanceOf(BlockdevOptions.NullCo.class);
    }

    @Test
    void errorsAreQemus() {
        assertThatThrownBy(() -> filenames.protocolOptions("foo:bar", common)).hasMessage("Unknown protocol 'foo'");
        assertThatThrownBy(() -> filenames.protocolOptions("qcow2:/x", common)).hasMessage("Unknown protocol 'qcow2'");
        assertThatThrownBy(() -> filenames.protocolOptions("blkdebug:x.raw", common))
                .hasMessage("blkdebug requires both config file and image path");
        assertThatThrownBy(() -> filenames.protocolOptions("null-co://x", common))
                .hasMessage("The only allowed filename for this driver is 'null-co://'");
        assertThatThrownBy(() -> filenames.protocolOptions("nbd://localhost/e", common))
                .hasMessageStartingWith("Unknown protocol 'nbd': jblockd has no NBD client driver");
        assertThatThrownBy(() -> filenames.imageOptions(tmp.resolve("nosuch.raw").toString(), null, common, common))
                .hasMessage("Could not open '" + tmp.resolve("nosuch.raw") + "': No such file or directory");
        assertThatThrownBy(() -> filenames.creationPath("blkdebug::x.raw"))
                .hasMessage("Protocol driver 'blkdebug' does not support image creation");
    }

    @Test
    void theFormatIsProbedThroughTheProtocolLayer() throws Exception {
        Path raw = Files.write(tmp.resolve("plain.raw"), new byte[4096]);
        Path qcow2 = tmp.resolve("q.qcow2");
        byte[] head = new byte[4096];
        java.nio.ByteBuffer.wrap(head).putInt(0x514649fb).putInt(3);
        Files.write(qcow2, head);
        assertThat(filenames.imageOptions(raw.toString(), null, common, common)).isInstanceOf(BlockdevOptions.Raw.class);
        assertThat(filenames.imageOptions("blkdebug::" + qcow2, null, common, common))
                .isInstanceOf(BlockdevOptions.Qcow2.class);
        assertThat(filenames.imageOptions("null-co://", null, common, common)).isInstanceOf(BlockdevOptions.Raw.class);
        assertThat(filenames.imageOptions(qcow2.toString(), "raw", common, common)).isInstanceOf(BlockdevOptions.Raw.class);
    }
}
