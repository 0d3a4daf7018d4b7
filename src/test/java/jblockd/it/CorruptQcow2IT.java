package jblockd.it;

import static jblockd.it.Peers.exec;
import static jblockd.it.Peers.run;
import static org.assertj.core.api.Assertions.assertThat;

import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import com.fasterxml.jackson.databind.JsonNode;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/**
 * Corrupt and truncated qcow2 images, crafted by editing bytes after qemu-img create + write.
 * The image has 4 KiB clusters, so each L2 table covers 2 MiB and a 4 MiB disk has two: the
 * second L1 entry is pointed past the end of the file, into the header (unaligned) or at the
 * refcount table (aligned, but metadata). Reads of 2M..4M fail with EIO (never zeroes or someone
 * else's metadata), 0..2M still reads correctly, writes to the broken range are refused and do
 * not touch the file; the image is then marked corrupt (header bit, as QEMU does) and refuses
 * all writes; the daemon and QMP keep working.
 */
class CorruptQcow2IT {
    private static final Duration T = Duration.ofSeconds(30);
    private static final int MIB = 1 << 20;

    @TempDir
    Path dir;

    @BeforeEach
    void tools() {
        Peers.assumeTools("qemu-img", "qemu-io");
    }

    private static long be64(RandomAccessFile f, long off) throws Exception {
        f.seek(off);
        return f.readLong();
    }

    /** Creates the two-L2 image and returns it with L1[1] replaced by {@code l2Offset(file)}. */
    private Path craft(String how) throws Exception {
        Path img = dir.resolve("bad.qcow2");
        run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", img.toString(), "4M");
        run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 4M", img.toString());
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
            long l1 = be64(f, 40);
            long refTable = be64(f, 48);
            long bad = switch (how) {
                case "past-eof" -> (f.length() + 64 * 4096) & ~4095L;
                case "into-header" -> 0x200;
                case "refcount-table" -> refTable;
                default -> throw new IllegalArgumentException(how);
            };
            f.seek(l1 + 8);
            f.writeLong(bad | (1L << 63));
        }
        return img;
    }

    @ParameterizedTest(name = "L2 table {0}")
    @CsvSource({"past-eof", "into-header", "refcount-table"})
    void brokenL2TableGivesEioForItsRangeOnly(String how) throws Exception {
        Path img = craft(how);
        long sizeBefore = Files.size(img);
        Path nbd = dir.resolve("nbd.sock");
        String uri = "nbd+unix:///disk?socket=" + nbd;
        try (DaemonProcess d = DaemonProcess.start(dir,
                "--drive", "id=drive0,file=" + img + ",format=qcow2",
                "--nbd-server", "addr.type=unix,addr.path=" + nbd,
                "--export", "type=nbd,id=exp0,device=drive0,name=disk,writable=on");
             QmpTestClient c = d.connect();
             RawNbdClient guest = new RawNbdClient(nbd, "disk")) {
            assertThat(guest.read(0, 2 * MIB)).containsOnly((byte) 0x11);
            for (long off : new long[] {2L * MIB, 3L * MIB, 4L * MIB - 4096}) {
                RawNbdClient.NbdErrorReply e = org.junit.jupiter.api.Assertions.assertThrows(
                        RawNbdClient.NbdErrorReply.class, () -> guest.read(off, 4096), "read at " + off);
                assertThat(e.code).as("NBD_EIO").isEqualTo(5);
            }
            // a write into the broken range is refused and changes nothing in the file
            byte[] w = new byte[4096];
            java.util.Arrays.fill(w, (byte) 0x77);
            RawNbdClient.NbdErrorReply we = org.junit.jupiter.api.Assertions.assertThrows(
                    RawNbdClient.NbdErrorReply.class, () -> guest.write(3L * MIB, w, true));
            assertThat(we.code).isEqualTo(5);
            // once corruption is known, the image is marked corrupt and takes no more writes
            // anywhere (QEMU's qcow2_signal_corruption()), so nothing can be allocated over it
            RawNbdClient.NbdErrorReply we2 = org.junit.jupiter.api.Assertions.assertThrows(
                    RawNbdClient.NbdErrorReply.class, () -> guest.write(0, w, true));
            assertThat(we2.code).isEqualTo(5);
            assertThat(d.awaitStderr("Marking image as corrupt", java.time.Duration.ofSeconds(10))).contains("Marking image as corrupt");
            // the healthy range still reads, and a real peer agrees
            assertThat(guest.read(MIB, MIB)).containsOnly((byte) 0x11);
            run("qemu-io", "-r", "-f", "raw", "-c", "read -P 0x11 0 2M", uri);
            String out = exec("qemu-io", "-r", "-f", "raw", "-c", "read 2M 4k", uri).out();
            assertThat(out).contains("Input/output error");
            // QMP still answers
            JsonNode blk = c.executeOk("query-block").get(0);
            assertThat(blk.get("device").asText()).isEqualTo("drive0");
            assertThat(d.isAlive()).isTrue();
        }
        assertThat(Files.size(img)).as("nothing was allocated on the broken image").isLessThanOrEqualTo(sizeBefore);
        // the healthy half is untouched on disk, and the header says corrupt (read-only opens only)
        run("qemu-io", "-r", "-f", "qcow2", "-c", "read -P 0x11 0 2M", img.toString());
        JsonNode info = QmpTestClient.json(run("qemu-img", "info", "--output=json", img.toString()));
        assertThat(info.at("/format-specific/data/corrupt").asBoolean()).isTrue();
    }

    @ParameterizedTest(name = "truncated to {0} bytes")
    @CsvSource({"0", "50", "100", "70000"})
    void truncatedImageIsRefusedAtOpenAndNothingIsHalfAdded(long length) throws Exception {
        Path img = dir.resolve("trunc.qcow2");
        run("qemu-img", "create", "-q", "-f", "qcow2", img.toString(), "4M");
        run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 4M", img.toString());
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
            f.setLength(length);
        }
        try (DaemonProcess d = DaemonProcess.start(dir); QmpTestClient c = d.connect()) {
            JsonNode before = c.executeOk("query-named-block-nodes");
            JsonNode err = c.executeError("blockdev-add", Map.of("driver", "qcow2", "node-name", "q0",
                    "file", Map.of("driver", "file", "filename", img.toString(), "node-name", "f0")));
            assertThat(err.get("class").asText()).isEqualTo("GenericError");
            assertThat(err.get("desc").asText()).isNotBlank();
            assertThat(c.executeOk("query-named-block-nodes")).isEqualTo(before);
            // the name is free again: the same node names can be used for a good image
            Path good = dir.resolve("good.qcow2");
            run("qemu-img", "create", "-q", "-f", "qcow2", good.toString(), "1M");
            c.executeOk("blockdev-add", Map.of("driver", "qcow2", "node-name", "q0",
                    "file", Map.of("driver", "file", "filename", good.toString(), "node-name", "f0")));
        }
        // and at start-up: one line naming the option, non-zero exit
        try (DaemonProcess d = DaemonProcess.startRaw(dir, "--drive", "id=drive0,file=" + img + ",format=qcow2",
                "--qmp", "unix:" + dir.resolve("q2.sock"))) {
            assertThat(d.waitFor(T)).isNotZero().isNotEqualTo(-1);
            assertThat(d.stderr().strip()).contains("--drive").doesNotContain("\n").doesNotContain("Exception");
            assertThat(Files.exists(dir.resolve("q2.sock"))).isFalse();
        }
    }

    /**
     * The first refcount block pointed past EOF (or at the header): its refcounts would read as
     * zero, so an allocating write would hand out clusters that hold the header, the L1 table or
     * data. The write must fail with EIO instead, and the existing data and header survive.
     */
    @ParameterizedTest(name = "refcount block {0}")
    @CsvSource({"past-eof", "l1-table"})
    void brokenRefcountBlockNeverHandsOutUsedClusters(String how) throws Exception {
        Path img = dir.resolve("rc.qcow2");
        run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", img.toString(), "4M");
        run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 2M", img.toString());
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
            long refTable = be64(f, 48);
            long l1 = be64(f, 40);
            long bad = how.equals("past-eof") ? (f.length() + 64 * 4096) & ~4095L : l1;
            f.seek(refTable);
            f.writeLong(bad);
        }
        Path nbd = dir.resolve("nbd.sock");
        try (DaemonProcess d = DaemonProcess.start(dir,
                "--drive", "id=drive0,file=" + img + ",format=qcow2",
                "--nbd-server", "addr.type=unix,addr.path=" + nbd,
                "--export", "type=nbd,id=exp0,device=drive0,name=disk,writable=on");
             QmpTestClient c = d.connect();
             RawNbdClient guest = new RawNbdClient(nbd, "disk")) {
            byte[] w = new byte[65536];
            java.util.Arrays.fill(w, (byte) 0x77);
            RawNbdClient.NbdErrorReply e = org.junit.jupiter.api.Assertions.assertThrows(
                    RawNbdClient.NbdErrorReply.class, () -> guest.write(3L * MIB, w, true));
            assertThat(e.code).isEqualTo(5);
            assertThat(guest.read(0, 2 * MIB)).containsOnly((byte) 0x11);
            assertThat(c.executeOk("query-block").get(0).get("device").asText()).isEqualTo("drive0");
        }
        // header, L1 and data intact for a real peer
        run("qemu-io", "-r", "-f", "qcow2", "-c", "read -P 0x11 0 2M", "-c", "read -P 0 2M 2M", img.toString());
    }

    /** A qcow2 file cut short in its data area (a truncated copy): lost clusters read as EIO, not zeroes. */
    @org.junit.jupiter.api.Test
    void dataClustersCutOffByTruncationReadAsEio() throws Exception {
        Path img = dir.resolve("cut.qcow2");
        run("qemu-img", "create", "-q", "-f", "qcow2", img.toString(), "4M");
        run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 4M", img.toString());
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
            f.setLength(f.length() - MIB); // data clusters are allocated in guest order: 3M..4M gone
        }
        Path nbd = dir.resolve("nbd.sock");
        try (DaemonProcess d = DaemonProcess.start(dir,
                "--drive", "id=drive0,file=" + img + ",format=qcow2,read-only=on",
                "--nbd-server", "addr.type=unix,addr.path=" + nbd,
                "--export", "type=nbd,id=exp0,device=drive0,name=disk");
             QmpTestClient c = d.connect();
             RawNbdClient guest = new RawNbdClient(nbd, "disk")) {
            assertThat(guest.read(0, 3 * MIB)).containsOnly((byte) 0x11);
            RawNbdClient.NbdErrorReply e = org.junit.jupiter.api.Assertions.assertThrows(
                    RawNbdClient.NbdErrorReply.class, () -> guest.read(3L * MIB + 65536, 65536));
            assertThat(e.code).isEqualTo(5);
            assertThat(guest.read(2L * MIB, 65536)).containsOnly((byte) 0x11);
            assertThat(c.executeOk("query-block")).hasSize(1);
        }
    }
}
