package jblockd.client;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;

/** The rbd blockdev-add options jblockctl rebuilds from a node's json: filename (QEMU's strong options). */
class RbdSnapshotsTest {

    @Test
    void anRbdNodesFilenameGivesItsOptionsWithServersAsAList() {
        String f = "json:{\"driver\": \"rbd\", \"pool\": \"rbd\", \"image\": \"img\", \"user\": \"admin\", "
                + "\"server.0.host\": \"127.0.0.1\", \"server.0.port\": \"6789\", \"server.1.host\": \"::1\", "
                + "\"server.1.port\": \"3300\"}";
        assertThat(RbdSnapshots.rbdOptions(f, "rbd").orElseThrow().toString()).isEqualTo(
                "{\"driver\":\"rbd\",\"pool\":\"rbd\",\"image\":\"img\",\"user\":\"admin\",\"server\":"
                        + "[{\"host\":\"127.0.0.1\",\"port\":\"6789\"},{\"host\":\"::1\",\"port\":\"3300\"}]}");
    }

    @Test
    void aRawNodeWithNoOptionsOfItsOwnStandsForItsRbdFile() {
        String f = "json:{\"driver\": \"raw\", \"file\": {\"driver\": \"rbd\", \"pool\": \"p\", \"image\": \"i\"}}";
        assertThat(RbdSnapshots.rbdOptions(f, "raw").orElseThrow().path("image").asText()).isEqualTo("i");
    }

    @Test
    void notAnRbdImageAtAll() {
        assertThat(RbdSnapshots.rbdOptions("/var/lib/disk.qcow2", "qcow2")).isEmpty();
        assertThat(RbdSnapshots.rbdOptions("json:{\"driver\": \"raw\", \"offset\": 512, \"file\": {\"driver\": "
                + "\"rbd\", \"pool\": \"p\", \"image\": \"i\"}}", "raw")).isEmpty();
        // an rbd node at a snapshot is no device to back up from its own snapshots
        assertThat(RbdSnapshots.rbdOptions("json:{\"driver\": \"rbd\", \"pool\": \"p\", \"image\": \"i\", "
                + "\"snapshot\": \"s\"}", "rbd")).isEmpty();
        assertThat(RbdSnapshots.rbdOptions("json:{broken", "rbd")).isEmpty();
    }
}
