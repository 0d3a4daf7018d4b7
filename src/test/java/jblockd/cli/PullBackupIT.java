package jblockd.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import com.fasterxml.jackson.databind.JsonNode;

import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.NbdPeer;
import jblockd.testsupport.QmpTestClient;

/**
 * {@code jblockctl pull} end to end against jblockd and qemu-storage-daemon 7.2: a full pull
 * that sets checkpoint chk0, guest writes (data and zeroes) over NBD, then an incremental pull
 * from chk0 into a qcow2 over the full one that sets chk1. The chain restores the disk at the
 * second fleecing point, the new link holds only the changed clusters, the checkpoints are as
 * the flow promises (chk0 untouched, chk1 empty), and nothing the pull added stays in the daemon.
 */
class PullBackupIT {
    private static final Duration T = Duration.ofSeconds(60);
    private static final long K64 = 64 * 1024;
    private static final long MIB = 1 << 20;

    @TempDir
    Path dir;

    private interface Scenario {
        void run(QmpTestClient c, Path qmp, Path dir) throws Exception;
    }

    private void onJblockd(Scenario s) throws Exception {
        assumeTrue(ExternalTools.present("qemu-img") && ExternalTools.present("qemu-io"));
        try (NbdPeer p = NbdPeer.jblockd(dir)) {
            s.run(p.qmp(), p.toolSocket(), p.dir());
        }
    }

    private void onQemuStorageDaemon(Scenario s) throws Exception {
        assumeTrue(ExternalTools.present("qemu-img") && ExternalTools.present("qemu-io")
                && ExternalTools.present("qemu-storage-daemon"));
        try (NbdPeer p = NbdPeer.qsd(dir)) {
            s.run(p.qmp(), p.toolSocket(), p.dir());
        }
    }

    @Test
    void fullThenIncrementalPullOnJblockd() throws Exception {
        onJblockd(this::pullScenario);
    }

    @Test
    void fullThenIncrementalPullOnQemuStorageDaemon() throws Exception {
        onQemuStorageDaemon(this::pullScenario);
    }

    @Test
    void pushIncrementalOverThePreviousBackupOnJblockd() throws Exception {
        onJblockd(this::pushScenario);
    }

    @Test
    void pushIncrementalOverThePreviousBackupOnQemuStorageDaemon() throws Exception {
        onQemuStorageDaemon(this::pushScenario);
    }

    /**
     * {@code jblockctl backup --incremental CHK --previous PREV}: the full backup and checkpoint
     * are made by hand (a transaction), then two incrementals, each a new qcow2 over the last;
     * each restores the disk at its start, holds only what changed, and the chain is printed.
     */
    private void pushScenario(QmpTestClient c, Path qmp, Path d) throws Exception {
        Path disk = d.resolve("disk.qcow2");
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", disk.toString(), "32M");
        ExternalTools.ok("qemu-io", "-c", "write -P 0x11 0 4M", disk.toString());
        c.executeOk("blockdev-add", Map.of("driver", "qcow2", "node-name", "fmt",
                "file", Map.of("driver", "file", "filename", disk.toString())));
        c.executeOk("block-export-add", Map.of("type", "nbd", "id", "guest", "node-name", "fmt", "name", "vda",
                "writable", true));
        String guest = "nbd+unix:///vda?socket=" + d.resolve("nbd.sock");
        Path full = d.resolve("full.qcow2");
        CliRunner.Result r = CliRunner.run("--socket", qmp.toString(), "backup", "fmt", full.toString(),
                "--format", "qcow2", "--job-id", "full");
        assertThat(r.code()).as("stdout:\n%s\nstderr:\n%s", r.out(), r.err()).isZero();
        c.executeOk("block-dirty-bitmap-add", Map.of("node", "fmt", "name", "chk", "persistent", true));
        Path previous = full;
        for (int k = 1; k <= 2; k++) {
            ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 0x" + (20 + k) + " " + k + "M 64k", guest);
            Path point = d.resolve("push-point" + k + ".raw");
            ExternalTools.ok("qemu-img", "convert", "-f", "raw", "-O", "raw", guest, point.toString());
            Path inc = d.resolve("push-inc" + k + ".qcow2");
            r = CliRunner.run("--socket", qmp.toString(), "backup", "fmt", inc.toString(), "--incremental", "chk",
                    "--previous", previous.toString());
            assertThat(r.code()).as("stdout:\n%s\nstderr:\n%s", r.out(), r.err()).isZero();
            String chain = k == 1 ? inc + " -> " + full : inc + " -> " + previous + " -> " + full;
            assertThat(r.out()).contains("chain: " + chain);
            ExternalTools.ok("qemu-img", "compare", "-f", "raw", "-F", "qcow2", point.toString(), inc.toString());
            List<String> own = new ArrayList<>();
            for (JsonNode e : QmpTestClient.json(ExternalTools.ok("qemu-img", "map", "--output=json",
                    inc.toString()))) {
                if (e.get("depth").asInt() == 0 && e.get("data").asBoolean()) {
                    own.add(e.get("start").asLong() + "+" + e.get("length").asLong());
                }
            }
            assertThat(own).containsExactly(k * MIB + "+" + K64);
            previous = inc;
        }
        List<String> nodes = new ArrayList<>();
        for (JsonNode n : c.executeOk("query-named-block-nodes", Map.of("flat", true))) {
            nodes.add(n.get("node-name").asText().startsWith("#") ? "#auto" : n.get("node-name").asText());
        }
        assertThat(nodes).containsOnly("fmt", "#auto");
        r = CliRunner.run("--socket", qmp.toString(), "backup", "fmt", d.resolve("x.qcow2").toString(),
                "--incremental", "chk");
        assertThat(r.code()).isEqualTo(2);
        assertThat(r.err()).contains("--incremental and --previous go together");
    }

    private void pullScenario(QmpTestClient c, Path qmp, Path d) throws Exception {
        Path disk = d.resolve("disk.qcow2");
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", disk.toString(), "64M");
        ExternalTools.ok("qemu-io", "-c", "write -P 0x11 0 8M", "-c", "write -P 0x44 32M 1M", disk.toString());
        c.executeOk("blockdev-add", Map.of("driver", "qcow2", "node-name", "fmt",
                "file", Map.of("driver", "file", "filename", disk.toString())));
        c.executeOk("block-export-add", Map.of("type", "nbd", "id", "guest", "node-name", "fmt", "name", "vda",
                "writable", true));
        String nbd = d.resolve("nbd.sock").toString();
        String guest = "nbd+unix:///vda?socket=" + nbd;

        Path point0 = d.resolve("point0.raw");
        ExternalTools.ok("qemu-img", "convert", "-f", "raw", "-O", "raw", guest, point0.toString());
        Path full = d.resolve("full.qcow2");
        CliRunner.Result r = CliRunner.run("--socket", qmp.toString(), "pull", "fmt", full.toString(),
                "--checkpoint", "chk0", "--nbd-socket", nbd, "--scratch", d.resolve("scratch0.qcow2").toString());
        assertThat(r.code()).as("stdout:\n%s\nstderr:\n%s", r.out(), r.err()).isZero();
        assertThat(r.out()).contains("pulled 64.0 MiB of 64.0 MiB").contains("chain: " + full);
        ExternalTools.ok("qemu-img", "compare", "-f", "raw", "-F", "qcow2", point0.toString(), full.toString());

        ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 0x22 1M 64k", "-c", "write -P 0x33 40M 1M",
                "-c", "write -z 4M 64k", guest);
        Path point1 = d.resolve("point1.raw");
        ExternalTools.ok("qemu-img", "convert", "-f", "raw", "-O", "raw", guest, point1.toString());
        Path inc = d.resolve("inc1.qcow2");
        r = CliRunner.run("--socket", qmp.toString(), "--json", "pull", "fmt", inc.toString(), "--bitmap", "chk0",
                "--previous", full.toString(), "--checkpoint", "chk1", "--nbd-socket", nbd,
                "--scratch", d.resolve("scratch1.qcow2").toString());
        assertThat(r.code()).as("stdout:\n%s\nstderr:\n%s", r.out(), r.err()).isZero();
        JsonNode out = QmpTestClient.json(r.out().strip());
        assertThat(out.get("dirty").asLong()).isEqualTo(K64 + MIB + K64);
        assertThat(out.get("data").asLong()).isEqualTo(K64 + MIB);
        assertThat(out.get("zero").asLong()).isEqualTo(K64);
        assertThat(out.get("chain").toString()).isEqualTo("[\"" + inc + "\",\"" + full + "\"]");
        ExternalTools.ok("qemu-img", "compare", "-f", "raw", "-F", "qcow2", point1.toString(), inc.toString());
        ExternalTools.ok("qemu-img", "check", inc.toString());
        // the link holds just what changed: data at 1M and 40M, the zeroes at 4M as zero clusters
        List<String> own = new ArrayList<>();
        for (JsonNode e : QmpTestClient.json(ExternalTools.ok("qemu-img", "map", "--output=json", inc.toString()))) {
            if (e.get("depth").asInt() == 0) {
                own.add(e.get("start").asLong() + "+" + e.get("length").asLong() + (e.get("data").asBoolean() ? ""
                        : " zero"));
            }
        }
        assertThat(own).containsExactly(MIB + "+" + K64, 4 * MIB + "+" + K64 + " zero", 40 * MIB + "+" + MIB);

        // chk0 kept what it had; chk1 started at the second fleecing point; nothing else is left
        List<String> bitmaps = new ArrayList<>();
        List<String> nodes = new ArrayList<>();
        for (JsonNode n : c.executeOk("query-named-block-nodes", Map.of("flat", true))) {
            nodes.add(n.get("node-name").asText().startsWith("#") ? "#auto" : n.get("node-name").asText());
            if (n.get("node-name").asText().equals("fmt")) {
                for (JsonNode b : n.path("dirty-bitmaps")) {
                    bitmaps.add(b.get("name").asText() + "=" + b.get("count").asLong());
                }
            }
        }
        assertThat(bitmaps).containsExactlyInAnyOrder("chk0=" + (K64 + MIB + K64), "chk1=0");
        assertThat(nodes).containsOnly("fmt", "#auto");
        assertThat(c.executeOk("query-block-exports", null)).hasSize(1);
        assertThat(c.executeOk("query-jobs", null)).isEmpty();
        assertThat(Files.exists(d.resolve("scratch1.qcow2"))).isTrue(); // given by the user: left to them

        // a pull that cannot start leaves nothing behind either
        r = CliRunner.run("--socket", qmp.toString(), "pull", "fmt", d.resolve("bad.qcow2").toString(),
                "--bitmap", "nosuch", "--nbd-socket", nbd, "--scratch", d.resolve("scratch2.qcow2").toString());
        assertThat(r.code()).isNotZero();
        assertThat(r.err()).contains("nosuch");
        assertThat(Files.exists(d.resolve("bad.qcow2"))).isFalse();
        List<String> after = new ArrayList<>();
        for (JsonNode n : c.executeOk("query-named-block-nodes", Map.of("flat", true))) {
            after.add(n.get("node-name").asText().startsWith("#") ? "#auto" : n.get("node-name").asText());
        }
        assertThat(after).containsOnly("fmt", "#auto");
        assertThat(c.executeOk("query-jobs", null)).isEmpty();
    }
}
