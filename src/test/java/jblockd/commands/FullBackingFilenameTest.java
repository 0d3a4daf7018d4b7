package jblockd.commands;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;

/** bdrv_get_full_backing_filename() as QEMU 7.2 shows it in query-block's full-backing-filename. */
class FullBackingFilenameTest {

    @Test
    void relativeNamesAreTakenFromTheImageDirectory() {
        assertThat(ImageInfos.fullBackingFilename("/tmp/qi/top.qcow2", "base.qcow2")).isEqualTo("/tmp/qi/base.qcow2");
        assertThat(ImageInfos.fullBackingFilename("/tmp/qi/top.qcow2", "../b/base.qcow2"))
                .isEqualTo("/tmp/qi/../b/base.qcow2");
        // a relative image name gives a relative result (observed: -drive file=top.qcow2)
        assertThat(ImageInfos.fullBackingFilename("top.qcow2", "base.qcow2")).isEqualTo("base.qcow2");
        assertThat(ImageInfos.fullBackingFilename("d/top.qcow2", "base.qcow2")).isEqualTo("d/base.qcow2");
    }

    @Test
    void absoluteAndProtocolNamesStayAsWritten() {
        assertThat(ImageInfos.fullBackingFilename("/tmp/top.qcow2", "/srv/base.qcow2")).isEqualTo("/srv/base.qcow2");
        assertThat(ImageInfos.fullBackingFilename("/tmp/top.qcow2", "nbd://host/x")).isEqualTo("nbd://host/x");
        assertThat(ImageInfos.fullBackingFilename("/tmp/top.qcow2", "json:{\"a\":1}")).isEqualTo("json:{\"a\":1}");
        // a ':' after a '/' is no protocol
        assertThat(ImageInfos.fullBackingFilename("/tmp/top.qcow2", "x/a:b")).isEqualTo("/tmp/x/a:b");
    }
}
