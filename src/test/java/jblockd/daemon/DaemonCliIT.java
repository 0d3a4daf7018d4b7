package jblockd.daemon;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.DriverRegistry;
import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/** bin/jblockd's command line (SPEC.md §1) against the real daemon process. */
class DaemonCliIT {
    @TempDir
    Path dir;

    private static final Duration EXIT = Duration.ofSeconds(20);

    private static boolean hasDriver(String name) {
        return DriverRegistry.standard().factory(name) != null;
    }

    private static boolean hasTool(String tool) {
        for (String p : System.getenv("PATH").split(":")) {
            if (Files.isExecutable(Path.of(p, tool))) {
                return true;
            }
        }
        return false;
    }

    private static String run(Path dir, String... cmd) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(cmd).directory(dir.toFile()).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        assertThat(p.waitFor(60, TimeUnit.SECONDS)).isTrue();
        assertThat(p.exitValue()).as(out).isZero();
        return out;
    }

    @Test
    void helpAndVersion() throws Exception {
        try (DaemonProcess d = DaemonProcess.startRaw(dir, "--help")) {
            assertThat(d.waitFor(EXIT)).isZero();
            assertThat(d.stdout()).contains("--qmp", "--drive", "--blockdev", "--nbd-server", "--export", "--pidfile");
        }
        try (DaemonProcess d = DaemonProcess.startRaw(dir, "--version")) {
            assertThat(d.waitFor(EXIT)).isZero();
            assertThat(d.stdout()).startsWith("jblockd ").contains("QEMU 7.2");
        }
    }

    /** One line naming the option, exit 1, and no socket or pidfile left behind. */
    private void assertStartupFails(String expectedLine, String... args) throws Exception {
        Path sock = dir.resolve("fail.sock");
        Path pid = dir.resolve("fail.pid");
        String[] all = new String[args.length + 4];
        all[0] = "--qmp";
        all[1] = "unix:" + sock;
        all[2] = "--pidfile";
        all[3] = pid.toString();
        System.arraycopy(args, 0, all, 4, args.length);
        try (DaemonProcess d = DaemonProcess.startRaw(dir, all)) {
            assertThat(d.waitFor(EXIT)).isEqualTo(1);
            List<String> lines = d.stderr().lines().toList();
            assertThat(lines).hasSize(1);
            if (expectedLine != null) {
                assertThat(lines.getFirst()).isEqualTo(expectedLine);
            } else {
                assertThat(lines.getFirst()).startsWith("jblockd: --" + args[args.length - 2].substring(2) + " "
                        + args[args.length - 1] + ": ");
            }
        }
        assertThat(sock).doesNotExist();
        assertThat(pid).doesNotExist();
    }

    @Test
    void badOptionsFailWithOneLineNamingTheOption() throws Exception {
        Path img = dir.resolve("d.raw");
        Files.write(img, new byte[65536]);
        String missing = dir.resolve("missing.img").toString();
        assertStartupFails("jblockd: --drive id=d0,file=" + missing + ",format=raw: Could not open '" + missing
                + "': No such file or directory", "--drive", "id=d0,file=" + missing + ",format=raw");
        assertStartupFails("jblockd: --drive id=d0,file=" + img + ",rerror=enospc: 'enospc' invalid read error action",
                "--drive", "id=d0,file=" + img + ",rerror=enospc");
        assertStartupFails("jblockd: --drive id=d0,file=" + img + ",werror=auto: 'auto' invalid write error action",
                "--drive", "id=d0,file=" + img + ",werror=auto");
        assertStartupFails("jblockd: --drive id=d0,file=" + img + ",werror=bogus: 'bogus' invalid write error action",
                "--drive", "id=d0,file=" + img + ",werror=bogus");
        assertStartupFails("jblockd: --blockdev driver=file,node-name=f,filename=" + img + ",bogus=1: "
                + "Parameter 'bogus' is unexpected", "--blockdev", "driver=file,node-name=f,filename=" + img + ",bogus=1");
        assertStartupFails("jblockd: --blockdev {\"driver\":\"file\",\"node-name\":\"f\"}: Parameter 'filename' is missing",
                "--blockdev", "{\"driver\":\"file\",\"node-name\":\"f\"}");
        assertStartupFails("jblockd: --qmp bogus: expected unix:PATH or tcp:HOST:PORT, got 'bogus'", "--qmp", "bogus");
        assertStartupFails("jblockd: --monitor chardev=nope: chardev \"nope\" not found", "--monitor", "chardev=nope");
        // a later failure undoes what earlier options opened (the text is the file driver's)
        assertStartupFails(null, "--blockdev", "driver=file,node-name=ok,filename=" + img,
                "--blockdev", "driver=file,node-name=f,filename=" + missing);
        try (DaemonProcess d = DaemonProcess.startRaw(dir, "--bogus")) {
            assertThat(d.waitFor(EXIT)).isNotZero();
            assertThat(d.stderr()).contains("--bogus");
        }
    }

    @Test
    void optionsThatNeedAnotherComponentFailClearlyWhenAbsent() throws Exception {
        try (jblockd.daemon.Daemon probe = jblockd.daemon.Daemon.builder().build()) {
            assumeTrue(probe.registry().get("nbd-server-start") == null, "NBD commands are present");
        }
        assertStartupFails("jblockd: --nbd-server addr.type=inet,addr.host=127.0.0.1,addr.port=0: "
                + "command 'nbd-server-start' is not available in this build",
                "--nbd-server", "addr.type=inet,addr.host=127.0.0.1,addr.port=0");
    }

    @Test
    void blockdevKeyvalAndJsonCreateNodes() throws Exception {
        Path img = dir.resolve("b.raw");
        Files.write(img, new byte[131072]);
        try (DaemonProcess d = DaemonProcess.start(dir,
                "--blockdev", "driver=file,node-name=kv,filename=" + img + ",read-only=on",
                "--blockdev", "{\"driver\":\"file\",\"node-name\":\"js\",\"filename\":\"" + img + "\"}");
             QmpTestClient c = d.connect()) {
            Map<String, JsonNode> byName = new java.util.HashMap<>();
            for (JsonNode n : c.executeOk("query-named-block-nodes")) {
                byName.put(n.get("node-name").asText(), n);
            }
            assertThat(byName).containsKeys("kv", "js");
            assertThat(byName.get("kv").get("ro").asBoolean()).isTrue();
            assertThat(byName.get("js").get("ro").asBoolean()).isFalse();
            assertThat(byName.get("js").at("/image/virtual-size").asLong()).isEqualTo(131072);
            // monitor-added nodes can be deleted, command-line ones too (both go through blockdev-add)
            c.executeOk("blockdev-del", Map.of("node-name", "js"));
        }
    }

    @Test
    void driveCreatesADeviceShownByQueryBlockAndTheImageStaysConsistent() throws Exception {
        assumeTrue(hasDriver("qcow2") && hasTool("qemu-img"), "qcow2 driver and qemu-img needed");
        Path img = dir.resolve("d.qcow2");
        run(dir, "qemu-img", "create", "-f", "qcow2", img.toString(), "4M");
        Path pid = dir.resolve("d.pid");
        DaemonProcess d = DaemonProcess.start(dir, "--pidfile", pid.toString(),
                "--drive", "id=drive0,file=" + img + ",format=qcow2,node-name=root0,werror=stop,rerror=stop");
        try (QmpTestClient c = d.connect()) {
            assertThat(Files.readString(pid).strip()).isEqualTo(Long.toString(d.pid()));
            JsonNode blocks = c.executeOk("query-block");
            assertThat(blocks).hasSize(1);
            JsonNode b = blocks.get(0);
            assertThat(b.get("device").asText()).isEqualTo("drive0");
            assertThat(b.get("type").asText()).isEqualTo("unknown");
            assertThat(b.get("io-status").asText()).isEqualTo("ok");
            assertThat(b.get("locked").isBoolean()).isTrue();
            JsonNode ins = b.get("inserted");
            assertThat(ins.get("node-name").asText()).isEqualTo("root0");
            assertThat(ins.get("drv").asText()).isEqualTo("qcow2");
            assertThat(ins.get("file").asText()).isEqualTo(img.toString());
            assertThat(ins.at("/image/virtual-size").asLong()).isEqualTo(4 << 20);
            assertThat(ins.at("/image/cluster-size").asInt()).isEqualTo(65536);
            assertThat(c.executeError("blockdev-del", Map.of("node-name", "root0")).get("desc").asText())
                    .isEqualTo("Node root0 is in use");
            c.executeOk("quit");
            c.waitEvent("SHUTDOWN", e -> e.at("/data/reason").asText().equals("host-qmp-quit"), Duration.ofSeconds(5));
            assertThat(d.waitFor(EXIT)).isZero();
        } finally {
            d.close();
        }
        assertThat(d.qmpSocket()).doesNotExist();
        assertThat(pid).doesNotExist();
        assertThat(run(dir, "qemu-img", "check", img.toString())).contains("No errors were found");
    }

    @Test
    void chardevMonitorAndTcpQmp() throws Exception {
        Path sock = dir.resolve("mon.sock");
        try (DaemonProcess d = DaemonProcess.start(dir,
                "--chardev", "socket,id=mon0,path=" + sock + ",server=on,wait=off",
                "--monitor", "chardev=mon0",
                "--qmp", "tcp:127.0.0.1:0")) {
            try (QmpTestClient c = QmpTestClient.connectUnix(sock)) {
                assertThat(c.executeOk("query-version").at("/qemu/major").asInt()).isEqualTo(7);
            }
            Matcher m = Pattern.compile("listening on tcp:127\\.0\\.0\\.1:(\\d+)").matcher(waitFor(d, "tcp:"));
            assertThat(m.find()).isTrue();
            try (QmpTestClient c = QmpTestClient.connectTcp("127.0.0.1", Integer.parseInt(m.group(1)))) {
                assertThat(c.executeOk("query-version").at("/qemu/minor").asInt()).isEqualTo(2);
            }
        }
        assertThat(sock).doesNotExist();
    }

    private static String waitFor(DaemonProcess d, String text) throws InterruptedException {
        for (int i = 0; i < 200 && !d.stderr().contains(text); i++) {
            Thread.sleep(25);
        }
        return d.stderr();
    }

    @Test
    void sigtermEmitsShutdownRemovesSocketAndPidfileAndExitsZero() throws Exception {
        Path pid = dir.resolve("t.pid");
        Path img = dir.resolve("t.raw");
        Files.write(img, new byte[65536]);
        DaemonProcess d = DaemonProcess.start(dir, "--pidfile", pid.toString(),
                "--blockdev", "driver=file,node-name=f0,filename=" + img);
        try (QmpTestClient c = d.connect()) {
            assertThat(pid).exists();
            d.terminate();
            JsonNode ev = c.waitEvent("SHUTDOWN", Duration.ofSeconds(10));
            assertThat(ev.at("/data/guest").asBoolean()).isFalse();
            assertThat(ev.at("/data/reason").asText()).isEqualTo("host-signal");
            assertThat(d.waitFor(EXIT)).isZero();
        } finally {
            d.close();
        }
        assertThat(d.qmpSocket()).doesNotExist();
        assertThat(pid).doesNotExist();
    }

    @Test
    void staleSocketFileIsReplaced() throws Exception {
        Path sock = dir.resolve("qmp.sock");
        try (DaemonProcess first = DaemonProcess.start(dir)) {
            first.process().destroyForcibly().waitFor(10, TimeUnit.SECONDS);
        }
        assertThat(sock).exists(); // killed -9: the socket file is stale
        try (DaemonProcess d = DaemonProcess.start(dir); QmpTestClient c = d.connect()) {
            assertThat(c.executeOk("query-version").has("qemu")).isTrue();
        }
    }
}
