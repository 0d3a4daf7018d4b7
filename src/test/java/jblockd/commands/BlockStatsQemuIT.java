package jblockd.commands;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.QemuStorageDaemon;
import jblockd.testsupport.QmpTestClient;

/**
 * query-blockstats side by side with qemu-storage-daemon 7.2 after the same guest I/O over NBD
 * (qemu-io), and the device-level counters of a jblockd {@code --drive} whose export is the
 * guest's way in.
 */
class BlockStatsQemuIT {
    private static final ObjectMapper M = new ObjectMapper();

    @TempDir
    Path tmp;

    private String[] args(Path dir) {
        return new String[] {"--blockdev", "driver=file,filename=" + dir.resolve("d.img") + ",node-name=f0",
            "--blockdev", "driver=raw,file=f0,node-name=r0",
            "--nbd-server", "addr.type=unix,addr.path=" + dir.resolve("nbd.sock"),
            "--export", "type=nbd,id=e0,node-name=r0,name=d,writable=on"};
    }

    private static void guestIo(Path dir) throws Exception {
        ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 7 0 64k", "-c", "write -z 1M 64k",
                "-c", "read 0 4k", "-c", "flush", "nbd+unix:///d?socket=" + dir.resolve("nbd.sock"));
    }

    @Test
    void nodeLevelStatsMatchQemu() throws Exception {
        ExternalTools.assumeTools("qemu-storage-daemon", "qemu-io", "qemu-img");
        Path qd = Files.createDirectories(tmp.resolve("q"));
        Path jd = Files.createDirectories(tmp.resolve("j"));
        for (Path d : new Path[] {qd, jd}) {
            ExternalTools.ok("qemu-img", "create", "-f", "raw", d.resolve("d.img").toString(), "4M");
        }
        try (QemuStorageDaemon q = QemuStorageDaemon.start(qd, args(qd));
             DaemonProcess j = DaemonProcess.start(jd, args(jd))) {
            QmpTestClient qc = q.connect();
            QmpTestClient jc = j.connect();
            guestIo(qd);
            guestIo(jd);
            for (Map<String, Object> a : java.util.List.<Map<String, Object>>of(Map.of(),
                    Map.of("query-nodes", false), Map.of("query-nodes", true))) {
                JsonNode qr = qc.execute("query-blockstats", a);
                JsonNode jr = jc.execute("query-blockstats", a);
                assertThat(jr).as("query-blockstats %s", a).isEqualTo(qr);
            }
            JsonNode nodes = jc.executeOk("query-blockstats", Map.of("query-nodes", true));
            assertThat(nodes.get(1).at("/stats/wr_highest_offset").asLong()).isEqualTo(1024 * 1024 + 65536);
            // arguments are checked as QEMU checks them
            assertThat(jc.execute("query-blockstats", Map.of("query-nodes", "x")))
                    .isEqualTo(qc.execute("query-blockstats", Map.of("query-nodes", "x")));
            qc.close();
            jc.close();
        }
    }

    @Test
    void deviceCountsWhatTheGuestDidThroughItsExport() throws Exception {
        ExternalTools.assumeTools("qemu-io", "qemu-img");
        Path img = tmp.resolve("disk.qcow2");
        ExternalTools.ok("qemu-img", "create", "-f", "qcow2", img.toString(), "4M");
        try (DaemonProcess j = DaemonProcess.start(tmp, "--drive", "id=drive0,file=" + img + ",format=qcow2",
                "--nbd-server", "addr.type=unix,addr.path=" + tmp.resolve("nbd.sock"),
                "--export", "type=nbd,id=e0,device=drive0,name=d,writable=on")) {
            QmpTestClient c = j.connect();
            JsonNode before = c.executeOk("query-blockstats").get(0);
            assertThat(before.get("device").asText()).isEqualTo("drive0");
            assertThat(before.at("/stats").has("idle_time_ns")).isFalse();
            assertThat(before.at("/stats/account_invalid").asBoolean()).isTrue();
            assertThat(before.at("/stats/account_failed").asBoolean()).isTrue();
            assertThat(before.at("/parent/driver-specific/driver").asText()).isEqualTo("file");
            guestIo(tmp);
            JsonNode s = c.executeOk("query-blockstats").get(0).get("stats");
            assertThat(s.get("wr_operations").asLong()).isEqualTo(2);
            assertThat(s.get("wr_bytes").asLong()).isEqualTo(2 * 65536);
            assertThat(s.get("rd_operations").asLong()).isEqualTo(1);
            assertThat(s.get("rd_bytes").asLong()).isEqualTo(4096);
            assertThat(s.get("flush_operations").asLong()).isGreaterThanOrEqualTo(1);
            assertThat(s.get("failed_wr_operations").asLong()).isZero();
            assertThat(s.get("wr_highest_offset").asLong()).isEqualTo(1024 * 1024 + 65536);
            assertThat(s.has("idle_time_ns")).isTrue();
            assertThat(s.get("wr_total_time_ns").asLong()).isPositive();
            c.close();
        }
    }
}
