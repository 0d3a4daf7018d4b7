package jblockd.block.rbd;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.CephCluster;
import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.NbdPeer;
import jblockd.testsupport.QmpTestClient;

/**
 * blockdev-snapshot-internal-sync and blockdev-snapshot-delete-internal-sync on rbd, the same QMP
 * on qemu-storage-daemon 7.2 and on jblockd over one cluster: every refusal in QEMU's order and
 * words, query-block's and query-named-block-nodes' snapshots, raw over rbd, a snapshot node,
 * a running job, the transaction action, and each snapshot's data read back through QEMU's
 * own rbd driver.
 */
class RbdSnapshotQemuIT {
    static CephCluster ceph;

    @TempDir
    Path dir;

    @BeforeAll
    static void cluster() throws Exception {
        ExternalTools.assumeTools("qemu-img", "qemu-io", "qemu-storage-daemon");
        ceph = CephCluster.start();
    }

    @AfterAll
    static void stop() throws Exception {
        if (ceph != null) {
            ceph.close();
        }
    }


    private static final ObjectMapper SORTED = new ObjectMapper()
            .configure(SerializationFeature.ORDER_MAP_ENTRIES_BY_KEYS, true);

    /** JSON with members in name order: QEMU writes a reply's members in its QDict hash order. */
    static String sorted(JsonNode n) throws Exception {
        return SORTED.writeValueAsString(SORTED.convertValue(n, Object.class));
    }

    static String reply(QmpTestClient q, String cmd, Object args) throws Exception {
        JsonNode r = q.execute(cmd, args);
        return cmd + " " + args + " -> " + sorted(r.has("error") ? r.get("error") : r.get("return"));
    }

    private static Map<String, Object> take(String device, String name) {
        return Map.of("device", device, "name", name);
    }

    /** The snapshots query-named-block-nodes shows for {@code node}. */
    static String snapshots(QmpTestClient q, String node) throws Exception {
        for (JsonNode b : q.executeOk("query-named-block-nodes")) {
            if (b.path("node-name").asText().equals(node)) {
                return node + " snapshots: " + sorted(b.path("image").path("snapshots"));
            }
        }
        return "no node " + node;
    }

    /** qemu-io's pattern check of {@code name} through QEMU's own rbd driver (true: it matched). */
    static boolean holds(String name, int pattern, String range) throws Exception {
        ExternalTools.Result r = ExternalTools.run("qemu-io", "-r", "-f", "raw", "-c",
                "read -P 0x" + Integer.toHexString(pattern) + " " + range, name);
        return r.exit() == 0 && !r.out().contains("verification failed") && !r.out().contains("failed");
    }

    private static void fresh(String image) throws Exception {
        ExternalTools.run("timeout", "60", "rbd", "--conf", ceph.conf().toString(), "snap", "purge", "rbd/" + image);
        ExternalTools.run("timeout", "60", "rbd", "--conf", ceph.conf().toString(), "rm", "rbd/" + image);
        ceph.createImage(image, 64L << 20);
        ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 0xaa 0 1M", ceph.rbdName(image));
    }

    @Test
    void internalSnapshotsAsQemu() throws Exception {
        String img = "isnap";
        NbdPeer.Both<List<String>> seen = NbdPeer.qemuThenJblockd(dir, p -> {
            fresh(img);
            QmpTestClient q = p.qmp();
            List<String> out = new ArrayList<>();
            q.executeOk("blockdev-add", ceph.blockdevAdd("r0", img));
            q.executeOk("blockdev-add", Map.of("driver", "null-co", "node-name", "n0", "size", 64L << 20));
            out.add(reply(q, "blockdev-snapshot-internal-sync", take("nosuch", "s1")));
            out.add(reply(q, "blockdev-snapshot-internal-sync", take("n0", "s1")));
            out.add(reply(q, "blockdev-snapshot-internal-sync", take("r0", "")));
            out.add(reply(q, "blockdev-snapshot-internal-sync", take("r0", "s1")));
            out.add(reply(q, "blockdev-snapshot-internal-sync", take("r0", "s1")));
            out.add(reply(q, "blockdev-snapshot-internal-sync", take("r0", "x".repeat(128))));
            // guest writes after s1, through an export of the node
            q.executeOk("block-export-add", Map.of("type", "nbd", "id", "e0", "node-name", "r0", "name", "r0",
                    "writable", true));
            ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 0xbb 0 64k",
                    "nbd+unix:///r0?socket=" + p.dir().resolve("nbd.sock"));
            q.executeOk("block-export-del", Map.of("id", "e0"));
            out.add("s1 holds 0xaa: " + holds(ceph.rbdName(img).replace(img + ":", img + "@s1:"), 0xaa, "0 1M"));
            out.add(reply(q, "block_resize", Map.of("node-name", "r0", "size", 96L << 20)));
            out.add(reply(q, "blockdev-snapshot-internal-sync", take("r0", "s2")));
            out.add(snapshots(q, "r0"));
            // raw over rbd forwards to its file; the rbd node below is not a root
            Map<String, Object> file = ceph.blockdevAdd("rf", img);
            q.executeOk("blockdev-add", Map.of("driver", "raw", "node-name", "w0", "file", file));
            out.add(reply(q, "blockdev-snapshot-internal-sync", take("rf", "s3")));
            out.add(reply(q, "blockdev-snapshot-internal-sync", take("w0", "s3")));
            out.add(snapshots(q, "w0"));
            // a snapshot node is read-only
            Map<String, Object> at = ceph.blockdevAdd("r1", img);
            at.put("snapshot", "s1");
            at.put("read-only", true);
            q.executeOk("blockdev-add", at);
            out.add(reply(q, "blockdev-snapshot-internal-sync", take("r1", "s4")));
            out.add(snapshots(q, "r1"));
            q.executeOk("blockdev-del", Map.of("node-name", "r1"));
            // deletion
            out.add(reply(q, "blockdev-snapshot-delete-internal-sync", Map.of("device", "r0")));
            out.add(reply(q, "blockdev-snapshot-delete-internal-sync", Map.of("device", "r0", "name", "nosuch")));
            out.add(reply(q, "blockdev-snapshot-delete-internal-sync", Map.of("device", "n0", "name", "s1")));
            out.add(reply(q, "blockdev-snapshot-delete-internal-sync", Map.of("device", "r0", "id", "s1")));
            out.add(reply(q, "blockdev-snapshot-delete-internal-sync",
                    Map.of("device", "r0", "id", "s2", "name", "s1")));
            out.add(reply(q, "blockdev-snapshot-delete-internal-sync", Map.of("device", "w0", "name", "s3")));
            out.add(reply(q, "blockdev-snapshot-delete-internal-sync",
                    Map.of("device", "r0", "id", "s2", "name", "s2")));
            out.add(snapshots(q, "r0"));
            // during a backup both its source (under the job's filter) and its target have a parent
            q.executeOk("blockdev-add", Map.of("driver", "null-co", "node-name", "n1", "size", 96L << 20));
            q.executeOk("blockdev-backup", Map.of("job-id", "bk", "device", "r0", "target", "n1", "sync", "full",
                    "speed", 1));
            out.add(reply(q, "blockdev-snapshot-internal-sync", take("r0", "s5")));
            out.add(reply(q, "blockdev-snapshot-delete-internal-sync", Map.of("device", "r0", "name", "s1")));
            q.executeOk("block-job-cancel", Map.of("device", "bk", "force", true));
            RbdQemuIT.awaitEnd(q, "bk");
            q.executeOk("blockdev-backup", Map.of("job-id", "bk2", "device", "n1", "target", "r0", "sync", "full",
                    "speed", 1));
            out.add(reply(q, "blockdev-snapshot-internal-sync", take("r0", "s5")));
            out.add(reply(q, "blockdev-snapshot-delete-internal-sync", Map.of("device", "r0", "name", "s1")));
            q.executeOk("block-job-cancel", Map.of("device", "bk2", "force", true));
            RbdQemuIT.awaitEnd(q, "bk2");
            // as a transaction action
            out.add(reply(q, "transaction", Map.of("actions", List.of(Map.of("type",
                    "blockdev-snapshot-internal-sync", "data", take("r0", "t1"))))));
            out.add(snapshots(q, "r0"));
            out.add(reply(q, "transaction", Map.of("actions", List.of(Map.of("type",
                    "blockdev-snapshot-internal-sync", "data", take("r0", "t1"))))));
            return out;
        });
        assertThat(seen.jblockd()).containsExactlyElementsOf(seen.qemu());
        assertThat(String.join("\n", seen.jblockd()))
                .contains("Cannot find device='nosuch' nor node-name='nosuch'")
                .contains("Block format 'null-co' used by device 'n0' does not support internal snapshots")
                .contains("Device 'r1' is read only")
                .contains("Snapshot with name 's1' already exists on device 'r0'")
                .contains("s1 holds 0xaa: true")
                .contains("Need a root block node");
    }

    /** qcow2 internal snapshots are listed but not taken: refused with the reason, image untouched. */
    @Test
    void qcow2InternalSnapshotsAreRefused() throws Exception {
        Path img = dir.resolve("q.qcow2");
        ExternalTools.ok("qemu-img", "create", "-f", "qcow2", img.toString(), "16M");
        try (NbdPeer p = NbdPeer.jblockd(dir)) {
            QmpTestClient q = p.qmp();
            q.executeOk("blockdev-add", Map.of("driver", "qcow2", "node-name", "q0",
                    "file", Map.of("driver", "file", "filename", img.toString())));
            JsonNode e = q.executeError("blockdev-snapshot-internal-sync", take("q0", "s1"));
            assertThat(e.path("desc").asText()).isEqualTo("Failed to create snapshot 's1' on device 'q0': "
                    + jblockd.block.qcow2.Qcow2Driver.NO_INTERNAL_SNAPSHOTS);
        }
        assertThat(ExternalTools.ok("qemu-img", "snapshot", "-l", img.toString())).isEmpty();
    }

    /**
     * A transaction whose later action fails: jblockd deletes the snapshot it took; QEMU 7.2
     * deletes it by its empty id, rbd refuses, and the RBD snapshot stays (the one difference).
     */
    @Test
    void aFailedTransactionLeavesNoSnapshot() throws Exception {
        String img = "isnap-abort";
        NbdPeer.Both<List<String>> seen = NbdPeer.qemuThenJblockd(dir, p -> {
            fresh(img);
            QmpTestClient q = p.qmp();
            q.executeOk("blockdev-add", ceph.blockdevAdd("r0", img));
            List<String> out = new ArrayList<>();
            out.add(reply(q, "transaction", Map.of("actions", List.of(
                    Map.of("type", "blockdev-snapshot-internal-sync", "data", take("r0", "a1")),
                    Map.of("type", "abort", "data", Map.of())))));
            out.add(ceph.rbd("snap", "ls", "rbd/" + img).strip());
            return out;
        });
        assertThat(seen.jblockd().get(0)).isEqualTo(seen.qemu().get(0));
        assertThat(seen.qemu().get(1)).contains("a1");
        assertThat(seen.jblockd().get(1)).isEmpty();
    }
}
