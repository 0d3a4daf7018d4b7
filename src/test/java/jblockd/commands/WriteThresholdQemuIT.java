package jblockd.commands;

import static jblockd.testsupport.QmpTestClient.json;
import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Path;
import java.time.Duration;
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
 * block-set-write-threshold and BLOCK_WRITE_THRESHOLD (libvirt arms it on thin volumes) on
 * jblockd and qemu-storage-daemon 7.2, the same steps on both: an unknown node, the threshold in
 * query-named-block-nodes, a guest write over NBD into a qcow2 firing the protocol node's
 * threshold (at the host offset the data cluster got) once and disarming it, -1 never firing.
 */
class WriteThresholdQemuIT {
    private static final Duration T = Duration.ofSeconds(30);

    @TempDir
    Path dir;

    @BeforeEach
    void tools() {
        ExternalTools.assumeTools("qemu-storage-daemon", "qemu-img", "qemu-io");
    }

    private List<String> run(NbdPeer peer) throws Exception {
        Path img = peer.dir().resolve("t.qcow2");
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", img.toString(), "16M");
        QmpTestClient q = peer.qmp();
        List<String> seen = new ArrayList<>();
        q.executeOk("blockdev-add", json("{\"driver\":\"qcow2\",\"node-name\":\"fmt\",\"file\":{\"driver\":\"file\","
                + "\"filename\":\"" + img + "\",\"node-name\":\"proto\"}}"));
        q.executeOk("block-export-add", json("{\"type\":\"nbd\",\"id\":\"g\",\"node-name\":\"fmt\",\"name\":\"vda\",\"writable\":true}"));
        seen.add(q.executeError("block-set-write-threshold", json("{\"node-name\":\"nosuch\",\"write-threshold\":100}")).toString());
        q.executeOk("block-set-write-threshold", json("{\"node-name\":\"fmt\",\"write-threshold\":-1}"));
        q.executeOk("block-set-write-threshold", json("{\"node-name\":\"proto\",\"write-threshold\":300000}"));
        seen.add(thresholds(q));
        ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write 1M 64k", "-c", "write 2M 4k", peer.nbd("vda"));
        JsonNode e = q.waitEvent("BLOCK_WRITE_THRESHOLD", T);
        seen.add(e.get("data").toString());
        seen.add(thresholds(q));
        // disarmed: more writes past it fire nothing; the next event seen is the one armed now
        ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write 3M 64k", peer.nbd("vda"));
        q.executeOk("block-set-write-threshold", json("{\"node-name\":\"fmt\",\"write-threshold\":4194304}"));
        ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -z 4M 4k", peer.nbd("vda"));
        seen.add(q.waitEvent("BLOCK_WRITE_THRESHOLD", T).get("data").toString());
        seen.add(thresholds(q));
        for (JsonNode left : q.drainEvents()) {
            if (left.get("event").asText().equals("BLOCK_WRITE_THRESHOLD")) {
                seen.add("extra " + left.get("data"));
            }
        }
        return seen;
    }

    private static String thresholds(QmpTestClient q) throws Exception {
        List<String> l = new ArrayList<>();
        for (JsonNode n : q.executeOk("query-named-block-nodes")) {
            l.add(n.get("node-name").asText() + "=" + n.get("write_threshold").asLong());
        }
        l.sort(null);
        return l.toString();
    }

    @Test
    void aThresholdFiresOnceAtTheNodeTheWriteReachesAsInQemu() throws Exception {
        NbdPeer.Both<List<String>> seen = NbdPeer.qemuThenJblockd(dir, this::run);
        assertThat(seen.qemu().get(2)).contains("\"node-name\":\"proto\"");
        assertThat(seen.jblockd()).isEqualTo(seen.qemu());
    }
}
