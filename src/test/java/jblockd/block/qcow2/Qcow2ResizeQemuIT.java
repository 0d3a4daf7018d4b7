package jblockd.block.qcow2;

import static jblockd.testsupport.QmpTestClient.json;
import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.NbdPeer;
import jblockd.testsupport.QmpTestClient;

/**
 * block_resize of a qcow2 (libvirt's disk resize) on jblockd and on qemu-storage-daemon 7.2:
 * the same image grown within its L1 table and past it (700 GiB: a new, larger L1 table), then
 * written beyond the old end over NBD. The images each daemon leaves have the same header and
 * length, pass qemu-img check, and read the same; the refusals jblockd keeps are clear.
 */
class Qcow2ResizeQemuIT {
    private static final long MIB = 1 << 20;

    @TempDir
    Path dir;

    @BeforeEach
    void tools() {
        ExternalTools.assumeTools("qemu-storage-daemon", "qemu-img", "qemu-io");
    }

    private List<String> grow(NbdPeer peer, Path img) throws Exception {
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", img.toString(), "64M");
        ExternalTools.ok("qemu-io", "-f", "qcow2", "-c", "write -P 3 1M 64k", img.toString());
        QmpTestClient q = peer.qmp();
        List<String> seen = new ArrayList<>();
        q.executeOk("blockdev-add", json("{\"driver\":\"qcow2\",\"node-name\":\"q\",\"file\":{\"driver\":\"file\",\"filename\":\"" + img + "\"}}"));
        seen.add(q.executeError("block_resize", json("{\"node-name\":\"q\",\"size\":1000}")).toString());
        q.executeOk("block_resize", json("{\"node-name\":\"q\",\"size\":" + (100 * MIB + 512) + "}"));
        seen.add(size(q));
        q.executeOk("block_resize", json("{\"node-name\":\"q\",\"size\":" + (700L << 30) + "}"));
        seen.add(size(q));
        q.executeOk("block-export-add", json("{\"type\":\"nbd\",\"id\":\"g\",\"node-name\":\"q\",\"name\":\"vda\",\"writable\":true}"));
        ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 9 600G 64k", "-c", "write -P 8 90M 64k", peer.nbd("vda"));
        q.executeOk("quit");
        return seen;
    }

    private static String size(QmpTestClient q) throws Exception {
        for (JsonNode n : q.executeOk("query-named-block-nodes")) {
            if (n.get("node-name").asText().equals("q")) {
                return "virtual-size " + n.get("image").get("virtual-size").asLong();
            }
        }
        return "no node q";
    }

    @Test
    void growingWithinAndPastTheL1TableGivesQemusImage() throws Exception {
        Path mine = dir.resolve("jb.qcow2");
        Path theirs = dir.resolve("qemu.qcow2");
        List<String> jb;
        List<String> qemu;
        try (NbdPeer p = NbdPeer.qsd(dir)) {
            qemu = grow(p, theirs);
        }
        try (NbdPeer p = NbdPeer.jblockd(dir)) {
            jb = grow(p, mine);
        }
        assertThat(jb).isEqualTo(qemu);
        ExternalTools.ok("qemu-img", "check", mine.toString());
        ExternalTools.ok("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", theirs.toString(), mine.toString());
        // The header (size, L1 size and offset: the new table where QEMU put it) is QEMU's byte for
        // byte. The rest differs only in where the 600G write's L2 table and data cluster went:
        // jblockd allocates the data cluster before a missing L2 table, QEMU the table first.
        byte[] a = Files.readAllBytes(mine);
        byte[] b = Files.readAllBytes(theirs);
        assertThat(java.util.Arrays.copyOf(a, 65536)).isEqualTo(java.util.Arrays.copyOf(b, 65536));
        assertThat(a.length).isEqualTo(b.length);
    }

    @Test
    void shrinkingAndImagesWithBitmapsAreRefusedAndLeftIntact() throws Exception {
        Path img = dir.resolve("b.qcow2");
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", img.toString(), "64M");
        ExternalTools.ok("qemu-img", "bitmap", "--add", img.toString(), "b0");
        Path plain = dir.resolve("p.qcow2");
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", plain.toString(), "64M");
        try (NbdPeer p = NbdPeer.jblockd(dir)) {
            QmpTestClient q = p.qmp();
            q.executeOk("blockdev-add", json("{\"driver\":\"qcow2\",\"node-name\":\"b\",\"file\":{\"driver\":\"file\",\"filename\":\"" + img + "\"}}"));
            q.executeOk("blockdev-add", json("{\"driver\":\"qcow2\",\"node-name\":\"p\",\"file\":{\"driver\":\"file\",\"filename\":\"" + plain + "\"}}"));
            assertThat(q.executeError("block_resize", json("{\"node-name\":\"b\",\"size\":134217728}")).get("desc").asText())
                    .isEqualTo("jblockd cannot resize a qcow2 image with persistent bitmaps yet");
            assertThat(q.executeError("block_resize", json("{\"node-name\":\"p\",\"size\":33554432}")).get("desc").asText())
                    .isEqualTo("jblockd cannot shrink qcow2 images yet");
            q.executeOk("quit");
        }
        ExternalTools.ok("qemu-img", "check", img.toString());
        assertThat(ExternalTools.ok("qemu-img", "info", img.toString())).contains("virtual size: 64 MiB").contains("b0");
        assertThat(ExternalTools.ok("qemu-img", "info", plain.toString())).contains("virtual size: 64 MiB");
    }
}
