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

    private BlockdevOptions.Nbd nbd(String server, String export, String filename) throws Exception {
        BlockdevOptions.NbdServer s = server.startsWith("/") ? new BlockdevOptions.NbdServer.Unix(server)
                : new BlockdevOptions.NbdServer.Inet(server.substring(0, server.lastIndexOf(':')),
                        server.substring(server.lastIndexOf(':') + 1));
        BlockdevOptions.Nbd o = (BlockdevOptions.Nbd) filenames.protocolOptions(filename, common);
        assertThat(o).as(filename).isEqualTo(new BlockdevOptions.Nbd(common, s, export, null, null, 0, 0, null));
        return o;
    }

    /** remote.md §2: every syntax, and the name QEMU reconstructs (nbd_refresh_filename). */
    @Test
    void nbdFilenamesGiveServerAndExport() throws Exception {
        nbd("127.0.0.1:48009", "exp1", "nbd://127.0.0.1:48009/exp1");
        nbd("127.0.0.1:10809", "exp1", "nbd://127.0.0.1/exp1");
        nbd("h:1", null, "nbd://h:1");
        nbd("h:1", null, "nbd://h:1/");
        nbd("::1:5", "e", "nbd+tcp://[::1]:5/e");
        nbd("/srv/q n.sock", "exp1", "nbd+unix:///exp1?socket=/srv/q%20n.sock");
        nbd("/s.sock", "a/b", "nbd+unix:///a/b?socket=/s.sock");
        nbd("/s.sock", "e", "nbd:unix:/s.sock:exportname=e");
        nbd("/s.sock", null, "nbd:unix:/s.sock");
        nbd("localhost:10809", "e", "nbd:localhost:10809:exportname=e");
        // inet_parse: the port runs to a comma, so resolution later refuses "1:foo=e" as QEMU does
        assertThat(filenames.protocolOptions("nbd:localhost:1:foo=e", common)).isEqualTo(new BlockdevOptions.Nbd(
                common, new BlockdevOptions.NbdServer.Inet("localhost", "1:foo=e"), null, null, null, 0, 0, null));
        assertThat(jblockd.block.nbd.NbdFilenames.filename(new BlockdevOptions.NbdServer.Inet("127.0.0.1", "48009"),
                "drive0")).isEqualTo("nbd://127.0.0.1:48009/drive0");
        assertThat(jblockd.block.nbd.NbdFilenames.filename(new BlockdevOptions.NbdServer.Unix("/srv/test/qn.sock"),
                "exp1")).isEqualTo("nbd+unix:///exp1?socket=/srv/test/qn.sock");
        assertThat(jblockd.block.nbd.NbdFilenames.filename(new BlockdevOptions.NbdServer.Inet("h", "1"), null))
                .isEqualTo("nbd://h:1");
    }

    @Test
    void badNbdFilenamesAreRefusedWithQemusTexts() {
        for (String bad : new String[] {"nbd+unix:///exp1", "nbd+unix:///e?socket=/x&foo=1", "nbd://h:1/e?socket=/x",
                "nbd+unix://h/e?socket=/x", "nbd://127.0.0.1:badport/e", "nbd+unix:///e?sock=/x", "nbd:///e"}) {
            assertThatThrownBy(() -> filenames.protocolOptions(bad, common)).as(bad).hasMessage("No valid URL specified");
        }
        assertThatThrownBy(() -> filenames.protocolOptions("nbd:127.0.0.1", common))
                .hasMessage("error parsing address '127.0.0.1'");
        assertThatThrownBy(() -> filenames.protocolOptions("nbd+unix:e", common))
                .hasMessage("File name string for NBD must start with 'nbd:'");
    }

    @Test
    void errorsAreQemus() {
        assertThatThrownBy(() -> filenames.protocolOptions("foo:bar", common)).hasMessage("Unknown protocol 'foo'");
        assertThatThrownBy(() -> filenames.protocolOptions("qcow2:/x", common)).hasMessage("Unknown protocol 'qcow2'");
        assertThatThrownBy(() -> filenames.protocolOptions("blkdebug:x.raw", common))
                .hasMessage("blkdebug requires both config file and image path");
        assertThatThrownBy(() -> filenames.protocolOptions("null-co://x", common))
                .hasMessage("The only allowed filename for this driver is 'null-co://'");
        assertThatThrownBy(() -> filenames.protocolOptions("nbds://localhost/e", common))
                .hasMessage("Unknown protocol 'nbds'");
        assertThatThrownBy(() -> filenames.protocolOptions("nbd+ssh://localhost/e", common))
                .hasMessage("Unknown protocol 'nbd+ssh'");
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
