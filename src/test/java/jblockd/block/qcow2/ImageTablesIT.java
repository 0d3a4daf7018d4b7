package jblockd.block.qcow2;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.List;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.FormatSpecific;
import jblockd.block.IoError;
import jblockd.block.SnapshotInfo;
import jblockd.testsupport.ExternalTools;

/**
 * The snapshot table and bitmap directory as qemu-img writes them, read back for query-block;
 * a damaged table is an error, not a guess; a read-write open keeps the bitmaps and marks them
 * in_use (Qcow2Bitmaps, QEMU's own state while it has the image open).
 */
class ImageTablesIT {
    @TempDir
    Path dir;
    Path img;

    @BeforeEach
    void image() throws Exception {
        ExternalTools.assumeTools("qemu-img");
        img = dir.resolve("t.qcow2");
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", img.toString(), "2M");
        ExternalTools.ok("qemu-img", "bitmap", "--add", img.toString(), "b0");
        ExternalTools.ok("qemu-img", "bitmap", "--add", "-g", "256k", "--disable", img.toString(), "cold");
        ExternalTools.ok("qemu-img", "snapshot", "-c", "first", img.toString());
        ExternalTools.ok("qemu-img", "snapshot", "-c", "second-with-a-longer-name", img.toString());
    }

    private static Qcow2Driver open(FileChannel ch, boolean ro) throws Exception {
        return Qcow2Driver.openOn(null, HostFile.of(ch), ro);
    }

    @Test
    void snapshotsAndBitmapsAsQemuImgWroteThem() throws Exception {
        try (FileChannel ch = FileChannel.open(img, StandardOpenOption.READ)) {
            Qcow2Driver d = open(ch, true);
            List<SnapshotInfo> s = d.snapshots();
            assertThat(s).extracting(SnapshotInfo::id).containsExactly("1", "2");
            assertThat(s).extracting(SnapshotInfo::name).containsExactly("first", "second-with-a-longer-name");
            assertThat(s.getFirst().dateSec()).isGreaterThan(1_600_000_000L);
            assertThat(s.getFirst().vmStateSize()).isZero();
            FormatSpecific.Qcow2 f = (FormatSpecific.Qcow2) d.formatSpecific().orElseThrow();
            assertThat(f.bitmaps()).containsExactly(
                    new FormatSpecific.Qcow2Bitmap("b0", 65536, List.of("auto")),
                    new FormatSpecific.Qcow2Bitmap("cold", 262144, List.of()));
            d.close();
        }
    }

    @Test
    void snapshotTablePastTheFileEndIsAnError() throws Exception {
        try (FileChannel ch = FileChannel.open(img, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            ByteBuffer n = ByteBuffer.allocate(4).putInt(0, 60000);
            ch.write(n, 60); // nb_snapshots
        }
        try (FileChannel ch = FileChannel.open(img, StandardOpenOption.READ)) {
            Qcow2Driver d = open(ch, true);
            assertThatThrownBy(d::snapshots).isInstanceOf(IoError.class).hasMessageContaining("Snapshot table");
            d.close();
        }
    }

    @Test
    void readWriteOpenKeepsTheBitmapsMarkedInUse() throws Exception {
        ExternalTools.ok("qemu-img", "snapshot", "-d", "first", img.toString());
        ExternalTools.ok("qemu-img", "snapshot", "-d", "second-with-a-longer-name", img.toString());
        try (FileChannel ch = FileChannel.open(img, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            Qcow2Driver d = open(ch, false);
            assertThat(((FormatSpecific.Qcow2) d.formatSpecific().orElseThrow()).bitmaps()).containsExactly(
                    new FormatSpecific.Qcow2Bitmap("b0", 65536, List.of("in-use", "auto")),
                    new FormatSpecific.Qcow2Bitmap("cold", 262144, List.of("in-use")));
            assertThat(d.snapshots()).isEmpty();
            d.close();
        }
        // QEMU sees what it sees of an image a writer holds open (or crashed with): in-use bitmaps
        assertThat(ExternalTools.ok("qemu-img", "info", img.toString())).contains("in-use");
    }
}
