package jblockd.commands;

import static jblockd.testsupport.QmpTestClient.json;
import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.RandomAccessFile;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.NbdPeer;
import jblockd.testsupport.QmpTestClient;

/**
 * The {@code host_device} driver (Proxmox sends it for every block-backed disk) on a loop
 * device, jblockd beside qemu-storage-daemon 7.2: the same blockdev-add steps and refusals
 * ({@code file} on a device, {@code host_device} on a regular file), the node's query shape,
 * guest writes, zero writes and discards over NBD reaching the device, and block_resize refused.
 */
class HostDeviceQemuIT {
    private static final int MIB = 1 << 20;
    private static final com.fasterxml.jackson.databind.ObjectMapper SORTED = new com.fasterxml.jackson.databind.ObjectMapper()
            .configure(com.fasterxml.jackson.databind.SerializationFeature.ORDER_MAP_ENTRIES_BY_KEYS, true);

    @TempDir
    Path dir;
    private String loop;

    @BeforeEach
    void loopDevice() throws Exception {
        ExternalTools.assumeTools("qemu-storage-daemon", "qemu-io", "losetup");
        Path img = dir.resolve("disk.img");
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
            f.setLength(32L * MIB);
        }
        ExternalTools.Result r = ExternalTools.run("losetup", "-f", "--show", img.toString());
        assumeTrue(r.exit() == 0, "no loop device here (needs root): " + r.out());
        loop = r.out().strip();
    }

    @AfterEach
    void detach() throws Exception {
        if (loop != null) {
            ExternalTools.run("losetup", "-d", loop);
        }
    }

    private List<String> run(NbdPeer peer) throws Exception {
        QmpTestClient q = peer.qmp();
        List<String> seen = new ArrayList<>();
        Path regular = dir.resolve("disk.img");
        seen.add(q.executeError("blockdev-add", json("{\"driver\":\"file\",\"node-name\":\"f\",\"filename\":\"" + loop + "\"}")).toString());
        seen.add(q.executeError("blockdev-add", json("{\"driver\":\"host_device\",\"node-name\":\"h0\",\"filename\":\"" + regular + "\"}")).toString());
        seen.add(q.executeError("blockdev-add", json("{\"driver\":\"host_device\",\"node-name\":\"h1\",\"filename\":\"/dev/nonexistent-jblockd\"}")).toString());
        q.executeOk("blockdev-add", json("{\"driver\":\"host_device\",\"node-name\":\"h\",\"filename\":\"" + loop + "\",\"aio\":\"threads\"}"));
        q.executeOk("blockdev-add", json("{\"driver\":\"raw\",\"node-name\":\"r\",\"file\":\"h\"}"));
        for (JsonNode n : q.executeOk("query-named-block-nodes")) {
            seen.add(SORTED.writeValueAsString(SORTED.treeToValue(n, Object.class))); // QEMU's member order is a hash's
        }
        seen.add(q.executeError("block_resize", json("{\"node-name\":\"h\",\"size\":67108864}")).toString());
        q.executeOk("block-export-add", json("{\"type\":\"nbd\",\"id\":\"g\",\"node-name\":\"r\",\"name\":\"vda\",\"writable\":true}"));
        String io = ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 7 1M 64k", "-c", "write -z 2M 64k",
                "-c", "read -P 7 1M 64k", "-c", "read -P 0 2M 64k", peer.nbd("vda"));
        seen.add(io.contains("Pattern verification failed") ? "pattern mismatch: " + io : "reads back");
        q.executeOk("block-export-del", json("{\"id\":\"g\"}"));
        q.waitEvent("BLOCK_EXPORT_DELETED", java.time.Duration.ofSeconds(10));
        q.executeOk("blockdev-del", json("{\"node-name\":\"r\"}"));
        q.executeOk("blockdev-del", json("{\"node-name\":\"h\"}"));
        return seen;
    }

    @Test
    void aLoopDeviceOpensAndServesAsInQemu() throws Exception {
        NbdPeer.Both<List<String>> seen = NbdPeer.qemuThenJblockd(dir, this::run);
        assertThat(seen.jblockd()).containsExactlyElementsOf(seen.qemu());
        byte[] b = new byte[64 * 1024];
        try (RandomAccessFile f = new RandomAccessFile(dir.resolve("disk.img").toFile(), "r")) {
            f.seek(MIB);
            f.readFully(b);
        }
        assertThat(b[0]).isEqualTo((byte) 7);
        assertThat(b[b.length - 1]).isEqualTo((byte) 7);
    }

    /** A plain file name that names a device opens host_device (bdrv_find_protocol's hdev_probe_device). */
    @Test
    void aDriveOnADeviceNameOpensHostDevice() throws Exception {
        try (jblockd.testsupport.DaemonProcess d = jblockd.testsupport.DaemonProcess.start(dir,
                "--drive", "id=d0,file=" + loop + ",format=raw");
             QmpTestClient q = d.connect()) {
            List<String> drivers = new ArrayList<>();
            for (JsonNode n : q.executeOk("query-named-block-nodes")) {
                drivers.add(n.get("drv").asText());
            }
            assertThat(drivers).containsExactlyInAnyOrder("raw", "host_device");
            q.executeOk("quit");
        }
    }
}
