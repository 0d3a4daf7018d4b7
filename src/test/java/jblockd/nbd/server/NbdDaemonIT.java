package jblockd.nbd.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/**
 * bin/jblockd's NBD exports and guest error policies at process level: real QMP, real clients
 * (qemu-io, qemu-img, nbdinfo, nbdcopy), blkdebug error injection (SPEC §5, errors.md §4).
 */
class NbdDaemonIT {
    private static final Duration EVENT = Duration.ofSeconds(20);

    @TempDir
    Path dir;

    @BeforeEach
    void tools() {
        assumeTrue(Tools.present("qemu-io") && Tools.present("qemu-img"), "qemu tools not installed");
    }

    private Path sock() {
        return dir.resolve("nbd.sock");
    }

    private String uri(String name) {
        return "nbd+unix:///" + name + "?socket=" + sock();
    }

    private Tools.Result qemuIo(String name, String... cmds) throws Exception {
        List<String> cmd = new ArrayList<>(List.of("qemu-io", "-f", "raw"));
        for (String c : cmds) {
            cmd.add("-c");
            cmd.add(c);
        }
        cmd.add(uri(name));
        return Tools.run(60, cmd);
    }

    private static Tools.Result ok(Tools.Result r) {
        assertThat(r.exit()).as(r.all()).isZero();
        assertThat(r.all()).doesNotContain("Pattern verification failed");
        return r;
    }

    private Path blkdebugConf(String event, int errno) throws IOException {
        Path conf = dir.resolve("blkdebug-" + event + "-" + errno + ".conf");
        Files.writeString(conf, "[inject-error]\nevent = \"" + event + "\"\nerrno = \"" + errno
                + "\"\nonce = \"on\"\n");
        return conf;
    }

    private DaemonProcess daemonWithDrive(String driveOptions) throws IOException {
        return DaemonProcess.start(dir, "--drive", driveOptions,
                "--nbd-server", "addr.type=unix,addr.path=" + sock(),
                "--export", "type=nbd,id=e0,node-name=drive0,name=disk,writable=on");
    }

    /** nbdinfo --map lines as "offset length flags", merged like the server merges them. */
    private static List<String> expectedMap(String qemuImgMapJson) {
        JsonNode entries = QmpTestClient.json(qemuImgMapJson);
        List<long[]> runs = new ArrayList<>();
        for (JsonNode e : entries) {
            long flags = e.path("data").asBoolean() ? 0 : 3;
            long start = e.path("start").asLong();
            long len = e.path("length").asLong();
            if (!runs.isEmpty() && runs.getLast()[2] == flags) {
                runs.getLast()[1] += len;
            } else {
                runs.add(new long[] {start, len, flags});
            }
        }
        return runs.stream().map(r -> r[0] + " " + r[1] + " " + r[2]).toList();
    }

    private static List<String> nbdinfoMap(String out) {
        return out.lines().map(String::trim).filter(l -> !l.isEmpty())
                .map(l -> {
                    String[] f = l.split("\\s+");
                    return f[0] + " " + f[1] + " " + f[2];
                }).toList();
    }

    @Test
    void qcow2OverBackingChainServesRealClientsAndMapsItsAllocation() throws Exception {
        Path base = dir.resolve("base.raw");
        Path top = dir.resolve("top.qcow2");
        ok(Tools.run(30, "qemu-img", "create", "-f", "raw", base.toString(), "4M"));
        ok(Tools.run(30, "qemu-io", "-f", "raw", "-c", "write -P 0x11 0 1M", "-c", "write -P 0x12 2M 512k",
                base.toString()));
        ok(Tools.run(30, "qemu-img", "create", "-f", "qcow2", "-b", base.toString(), "-F", "raw", top.toString()));
        ok(Tools.run(30, "qemu-io", "-f", "qcow2", "-c", "write -P 0x21 512k 256k", "-c", "write -z 2M 128k",
                "-c", "write -P 0x22 3M 64k", top.toString()));
        String map = ok(Tools.run(30, "qemu-img", "map", "--output=json", "-f", "qcow2", top.toString())).out();

        try (DaemonProcess d = daemonWithDrive("id=drive0,file=" + top + ",format=qcow2");
             QmpTestClient q = d.connect()) {
            JsonNode exports = q.executeOk("query-block-exports");
            assertThat(exports.size()).isEqualTo(1);
            assertThat(exports.get(0).path("id").asText()).isEqualTo("e0");
            assertThat(exports.get(0).path("type").asText()).isEqualTo("nbd");
            assertThat(exports.get(0).path("shutting-down").asBoolean()).isFalse();

            if (Tools.present("nbdinfo")) {
                Tools.Result m = ok(Tools.run(30, "nbdinfo", "--map", uri("disk")));
                assertThat(nbdinfoMap(m.out())).isEqualTo(expectedMap(map));
                Tools.Result list = ok(Tools.run(30, "nbdinfo", "--list", "nbd+unix://?socket=" + sock()));
                assertThat(list.out()).contains("export=", "disk");
            }
            ok(qemuIo("disk", "read -P 0x11 0 512k", "read -P 0x21 512k 256k", "read -P 0x11 768k 256k",
                    "read -P 0 1M 1M", "read -P 0 2M 128k", "read -P 0x12 2176k 384k", "read -P 0x22 3M 64k"));

            // qemu-img compare export vs image, convert both ways
            ok(Tools.run(60, "qemu-img", "compare", "-U", "-f", "raw", "-F", "qcow2", uri("disk"), top.toString()));
            Path copy = dir.resolve("copy.raw");
            ok(Tools.run(60, "qemu-img", "convert", "-f", "raw", "-O", "raw", uri("disk"), copy.toString()));
            ok(Tools.run(60, "qemu-img", "compare", "-U", "-f", "raw", "-F", "qcow2", copy.toString(), top.toString()));
            Path other = dir.resolve("other.raw");
            ok(Tools.run(30, "qemu-img", "create", "-f", "raw", other.toString(), "4M"));
            ok(Tools.run(30, "qemu-io", "-f", "raw", "-c", "write -P 0x5e 1M 1M", other.toString()));
            ok(Tools.run(60, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", other.toString(), uri("disk")));
            ok(Tools.run(60, "qemu-img", "compare", "-f", "raw", "-F", "raw", uri("disk"), other.toString()));

            if (Tools.present("nbdcopy")) {
                Path random = dir.resolve("random.raw");
                byte[] content = new byte[4 << 20];
                new java.util.Random(7).nextBytes(content);
                Files.write(random, content);
                ok(Tools.run(60, "nbdcopy", "--connections=4", random.toString(), uri("disk")));
                Path back = dir.resolve("back.raw");
                ok(Tools.run(60, "nbdcopy", "--connections=4", uri("disk"), back.toString()));
                assertThat(Files.readAllBytes(back)).isEqualTo(content);
            }
            q.executeOk("quit");
            assertThat(d.waitFor(Duration.ofSeconds(20))).isZero();
        }
        ok(Tools.run(30, "qemu-img", "check", top.toString()));
        ok(Tools.run(60, "qemu-img", "compare", "-f", "qcow2", "-F", "raw", top.toString(),
                dir.resolve("back.raw").toString()));
    }

    @Test
    void qmpStartsTcpServerAndExportsManageClients() throws Exception {
        Path img = dir.resolve("a.raw");
        ok(Tools.run(30, "qemu-img", "create", "-f", "raw", img.toString(), "2M"));
        int port;
        try (ServerSocket s = new ServerSocket(0)) {
            port = s.getLocalPort();
        }
        try (DaemonProcess d = DaemonProcess.start(dir, "--drive", "id=drive0,file=" + img + ",format=raw");
             QmpTestClient q = d.connect()) {
            assertThat(q.executeError("nbd-server-add", Map.of("device", "drive0")).path("desc").asText())
                    .isEqualTo("NBD server not running");
            q.executeOk("nbd-server-start", Map.of("addr", Map.of("type", "inet",
                    "data", Map.of("host", "127.0.0.1", "port", String.valueOf(port)))));
            assertThat(q.executeError("nbd-server-start", Map.of("addr", Map.of("type", "unix",
                    "data", Map.of("path", sock().toString())))).path("desc").asText())
                    .isEqualTo("NBD server already running");
            q.executeOk("nbd-server-add", Map.of("device", "drive0", "writable", true));
            q.executeOk("block-export-add", Map.of("type", "nbd", "id", "ro", "node-name", "drive0", "name", "ro"));
            String tcp = "nbd://127.0.0.1:" + port + "/drive0";
            ok(Tools.run(30, "qemu-io", "-f", "raw", "-c", "write -P 0x3c 0 64k", "-c", "read -P 0x3c 0 64k", tcp));
            Tools.Result ro = Tools.run(30, "qemu-io", "-f", "raw", "-c", "write -P 1 0 4k",
                    "nbd://127.0.0.1:" + port + "/ro");
            assertThat(ro.exit()).isNotZero();
            ok(Tools.run(30, "qemu-io", "-r", "-f", "raw", "-c", "read -P 0x3c 0 64k", "nbd://127.0.0.1:" + port + "/ro"));

            // a client in transmission keeps the export in use for mode=safe
            try (NbdServerIT.RawClient c = NbdServerIT.RawClient.tcp("127.0.0.1", port)) {
                c.handshakeGo("drive0", true);
                assertThat(q.executeError("nbd-server-remove", Map.of("name", "drive0")).path("desc").asText())
                        .isEqualTo("export 'drive0' still in use");
                q.executeOk("nbd-server-remove", Map.of("name", "drive0", "mode", "hard"));
                assertThat(c.atEof()).isTrue();
            }
            JsonNode left = q.executeOk("query-block-exports");
            assertThat(left.size()).isEqualTo(1);
            assertThat(left.get(0).path("id").asText()).isEqualTo("ro");
            q.executeOk("nbd-server-stop");
            assertThat(q.executeOk("query-block-exports").size()).isZero();
            assertThat(q.executeError("nbd-server-stop", null).path("desc").asText())
                    .isEqualTo("NBD server not running");
        }
        assertThat(Files.readAllBytes(img)[65535]).isEqualTo((byte) 0x3c);
    }

    @Test
    void werrorStopHoldsTheWriteUntilContThenItLands() throws Exception {
        Path img = dir.resolve("w.raw");
        ok(Tools.run(30, "qemu-img", "create", "-f", "raw", img.toString(), "2M"));
        Path conf = blkdebugConf("write_aio", 5);
        try (DaemonProcess d = daemonWithDrive("id=drive0,file=blkdebug:" + conf + ":" + img
                + ",format=raw,werror=stop");
             QmpTestClient q = d.connect()) {
            CompletableFuture<Tools.Result> writer = CompletableFuture.supplyAsync(() -> {
                try {
                    return qemuIo("disk", "write -P 0x7e 64k 64k");
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            JsonNode err = q.waitEvent("BLOCK_IO_ERROR", EVENT).path("data");
            assertThat(err.path("device").asText()).isEqualTo("drive0");
            assertThat(err.path("operation").asText()).isEqualTo("write");
            assertThat(err.path("action").asText()).isEqualTo("stop");
            assertThat(err.path("nospace").asBoolean(true)).isFalse();
            assertThat(err.path("reason").asText()).isEqualTo("Input/output error");
            assertThat(err.path("node-name").asText()).isNotEmpty();
            q.waitEvent("STOP", EVENT);
            assertThat(q.executeOk("query-status").toString())
                    .isEqualTo("{\"status\":\"io-error\",\"singlestep\":false,\"running\":false}");
            assertThat(ioStatus(q)).isEqualTo("failed");
            Thread.sleep(300);
            assertThat(writer).as("the failed write is held, not answered").isNotDone();
            q.executeOk("cont");
            q.waitEvent("RESUME", EVENT);
            ok(writer.get(60, TimeUnit.SECONDS));
            assertThat(q.executeOk("query-status").path("status").asText()).isEqualTo("running");
            assertThat(ioStatus(q)).isEqualTo("ok");
            ok(qemuIo("disk", "read -P 0x7e 64k 64k"));
        }
        byte[] disk = Files.readAllBytes(img);
        assertThat(disk[65536]).isEqualTo((byte) 0x7e);
        assertThat(disk[131071]).isEqualTo((byte) 0x7e);
    }

    private static String ioStatus(QmpTestClient q) throws IOException {
        for (JsonNode b : q.executeOk("query-block")) {
            if (b.path("device").asText().equals("drive0")) {
                return b.path("io-status").asText(null);
            }
        }
        return null;
    }

    @Test
    void werrorReportGivesTheClientEioAndKeepsRunning() throws Exception {
        Path img = dir.resolve("r.raw");
        ok(Tools.run(30, "qemu-img", "create", "-f", "raw", img.toString(), "2M"));
        Path conf = blkdebugConf("write_aio", 5);
        try (DaemonProcess d = daemonWithDrive("id=drive0,file=blkdebug:" + conf + ":" + img
                + ",format=raw,werror=report,rerror=report");
             QmpTestClient q = d.connect()) {
            Tools.Result w = qemuIo("disk", "write -P 0x7e 0 4k");
            assertThat(w.all()).contains("Input/output error");
            JsonNode err = q.waitEvent("BLOCK_IO_ERROR", EVENT).path("data");
            assertThat(err.path("action").asText()).isEqualTo("report");
            assertThat(err.has("nospace")).as("no io-status tracking with report/report").isFalse();
            assertThat(q.executeOk("query-status").path("status").asText()).isEqualTo("running");
            ok(qemuIo("disk", "write -P 0x7e 0 4k", "read -P 0x7e 0 4k"));
        }
    }

    @Test
    void rerrorStopAndIgnore() throws Exception {
        Path img = dir.resolve("rd.raw");
        ok(Tools.run(30, "qemu-img", "create", "-f", "raw", img.toString(), "2M"));
        ok(Tools.run(30, "qemu-io", "-f", "raw", "-c", "write -P 0x44 0 64k", img.toString()));
        Path conf = blkdebugConf("read_aio", 5);
        try (DaemonProcess d = daemonWithDrive("id=drive0,file=blkdebug:" + conf + ":" + img
                + ",format=raw,rerror=stop");
             QmpTestClient q = d.connect()) {
            CompletableFuture<Tools.Result> reader = CompletableFuture.supplyAsync(() -> {
                try {
                    return qemuIo("disk", "read -P 0x44 0 64k");
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            JsonNode err = q.waitEvent("BLOCK_IO_ERROR", EVENT).path("data");
            assertThat(err.path("operation").asText()).isEqualTo("read");
            assertThat(err.path("action").asText()).isEqualTo("stop");
            q.waitEvent("STOP", EVENT);
            assertThat(q.executeOk("query-status").path("status").asText()).isEqualTo("io-error");
            q.executeOk("cont");
            ok(reader.get(60, TimeUnit.SECONDS));
        }
        Path conf2 = blkdebugConf("read_aio", 5);
        try (DaemonProcess d = DaemonProcess.start(dir.resolve("."), "--drive", "id=drive0,file=blkdebug:" + conf2
                + ":" + img + ",format=raw,rerror=ignore",
                "--nbd-server", "addr.type=unix,addr.path=" + sock(),
                "--export", "type=nbd,id=e0,node-name=drive0,name=disk");
             QmpTestClient q = d.connect()) {
            Tools.Result r = Tools.run(30, "qemu-io", "-r", "-f", "raw", "-c", "read 0 4k", uri("disk"));
            assertThat(r.exit()).as(r.all()).isZero();
            assertThat(r.all()).doesNotContain("error");
            JsonNode err = q.waitEvent("BLOCK_IO_ERROR", EVENT).path("data");
            assertThat(err.path("action").asText()).isEqualTo("ignore");
            assertThat(q.executeOk("query-status").path("status").asText()).isEqualTo("running");
        }
    }

    @Test
    void enospcStopsWithNospaceAndEioReports() throws Exception {
        Path img = dir.resolve("n.raw");
        ok(Tools.run(30, "qemu-img", "create", "-f", "raw", img.toString(), "2M"));
        Path conf = blkdebugConf("write_aio", 28);
        try (DaemonProcess d = daemonWithDrive("id=drive0,file=blkdebug:" + conf + ":" + img
                + ",format=raw,werror=enospc");
             QmpTestClient q = d.connect()) {
            CompletableFuture<Tools.Result> writer = CompletableFuture.supplyAsync(() -> {
                try {
                    return qemuIo("disk", "write -P 0x1f 0 64k");
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            JsonNode err = q.waitEvent("BLOCK_IO_ERROR", EVENT).path("data");
            assertThat(err.path("action").asText()).isEqualTo("stop");
            assertThat(err.path("nospace").asBoolean()).isTrue();
            assertThat(err.path("reason").asText()).isEqualTo("No space left on device");
            q.waitEvent("STOP", EVENT);
            assertThat(ioStatus(q)).isEqualTo("nospace");
            q.executeOk("cont");
            ok(writer.get(60, TimeUnit.SECONDS));
        }
        assertThat(Files.readAllBytes(img)[0]).isEqualTo((byte) 0x1f);
        Path eio = blkdebugConf("write_aio", 5);
        try (DaemonProcess d = DaemonProcess.start(dir, "--drive", "id=drive0,file=blkdebug:" + eio + ":" + img
                + ",format=raw,werror=enospc",
                "--nbd-server", "addr.type=unix,addr.path=" + sock(),
                "--export", "type=nbd,id=e0,node-name=drive0,name=disk,writable=on");
             QmpTestClient q = d.connect()) {
            Tools.Result w = qemuIo("disk", "write -P 0x2f 0 4k");
            assertThat(w.all()).contains("Input/output error");
            JsonNode err = q.waitEvent("BLOCK_IO_ERROR", EVENT).path("data");
            assertThat(err.path("action").asText()).isEqualTo("report");
            assertThat(err.path("nospace").asBoolean(true)).isFalse();
            assertThat(q.executeOk("query-status").path("status").asText()).isEqualTo("running");
        }
    }

    @Test
    void manualStopHoldsGuestIoAndContReleasesIt() throws Exception {
        Path img = dir.resolve("s.raw");
        ok(Tools.run(30, "qemu-img", "create", "-f", "raw", img.toString(), "2M"));
        try (DaemonProcess d = daemonWithDrive("id=drive0,file=" + img + ",format=raw");
             QmpTestClient q = d.connect()) {
            q.executeOk("stop");
            q.waitEvent("STOP", EVENT);
            assertThat(q.executeOk("query-status").toString())
                    .isEqualTo("{\"status\":\"paused\",\"singlestep\":false,\"running\":false}");
            q.executeOk("stop"); // already stopped: {} and no event
            CompletableFuture<Tools.Result> writer = CompletableFuture.supplyAsync(() -> {
                try {
                    return qemuIo("disk", "write -P 0x66 0 64k");
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            Thread.sleep(1000);
            assertThat(writer).isNotDone();
            q.executeOk("cont");
            q.waitEvent("RESUME", EVENT);
            ok(writer.get(60, TimeUnit.SECONDS));
            q.executeOk("cont"); // running: {} and no event
            assertThat(q.drainEvents()).noneMatch(e -> e.path("event").asText().equals("STOP"));
        }
        assertThat(Files.readAllBytes(img)[0]).isEqualTo((byte) 0x66);
    }
}
