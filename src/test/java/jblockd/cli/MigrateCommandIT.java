package jblockd.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.Host;
import jblockd.testsupport.HostPair;
import jblockd.testsupport.QemuNbd;
import jblockd.testsupport.QemuStorageDaemon;
import jblockd.testsupport.QmpTestClient;
import jblockd.testsupport.TestCertificates;

/**
 * {@code jblockctl migrate} as a user runs it, between real daemons over TCP: jblockd to
 * jblockd, jblockd to qemu-storage-daemon 7.2 and qemu-storage-daemon to jblockd (jblockctl only
 * speaks QMP, so QEMU can be either side), with guest writes through the source's NBD export
 * while the mirror runs; hand-over (the destination image equals the source's final content)
 * and pivot (later guest writes land on the destination); TLS; a failed connection undone on
 * both sides.
 */
class MigrateCommandIT {
    private static final long SIZE = 32L << 20;

    @TempDir
    Path dir;

    @BeforeEach
    void tools() {
        ExternalTools.assumeTools("qemu-img", "qemu-io", "qemu-storage-daemon");
    }

    /** One daemon: the test's QMP client, the QMP socket jblockctl uses, its image. */
    private record Side(String name, AutoCloseable process, QmpTestClient qmp, Path qmpSocket, Path image)
            implements AutoCloseable {
        @Override
        public void close() throws Exception {
            qmp.close();
            process.close();
        }
    }

    private Side side(String name, boolean qemu, String node, byte fill) throws Exception {
        return side(Host.LOCAL, name, qemu, node, fill);
    }

    private Side side(Host host, String name, boolean qemu, String node, byte fill) throws Exception {
        Path d = Files.createDirectories(dir.resolve(name));
        Path img = d.resolve(node + ".raw");
        ExternalTools.ok("qemu-img", "create", "-f", "raw", img.toString(), Long.toString(SIZE));
        if (fill != 0) {
            ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P " + fill + " 0 " + SIZE, "-c",
                    "write -P 0x5c 3M 5M", img.toString());
        }
        Side s;
        if (qemu) {
            // a QEMU monitor serves one client at a time: a second one for jblockctl
            Path ctl = d.resolve("ctl.sock");
            QemuStorageDaemon q = QemuStorageDaemon.start(host, d, "--chardev", "socket,id=ctl,path=" + ctl
                    + ",server=on,wait=off", "--monitor", "chardev=ctl,mode=control");
            s = new Side(name, q, q.connect(), ctl, img);
        } else {
            DaemonProcess p = DaemonProcess.start(host, d);
            s = new Side(name, p, p.connect(), p.qmpSocket(), img);
        }
        s.qmp().executeOk("blockdev-add", Map.of("driver", "raw", "node-name", node,
                "file", Map.of("driver", "file", "filename", img.toString())));
        return s;
    }

    /** The source's guest: an NBD export {@code g} of {@code drive0} on a UNIX socket. */
    private static Path guestExport(Side src) throws Exception {
        Path sock = src.image().resolveSibling("guest.sock");
        src.qmp().executeOk("nbd-server-start", Map.of("addr", Map.of("type", "unix", "data",
                Map.of("path", sock.toString()))));
        src.qmp().executeOk("block-export-add", Map.of("type", "nbd", "id", "g", "node-name", "drive0", "name", "g",
                "writable", true));
        return sock;
    }

    private static void guestWrites(Path sock, long seed, int count) throws Exception {
        Random r = new Random(seed);
        List<String> cmd = new ArrayList<>(List.of("qemu-io", "-f", "raw"));
        for (int i = 0; i < count; i++) {
            long len = (1 + r.nextInt(16)) * 64L << 10;
            long off = (r.nextLong(SIZE - len) >> 12) << 12;
            cmd.addAll(List.of("-c", "write -P " + (1 + r.nextInt(250)) + " " + off + " " + len));
        }
        cmd.add("nbd+unix:///g?socket=" + sock);
        ExternalTools.ok(cmd.toArray(String[]::new));
    }

    /** jblockctl migrate as a process, in the background. */
    private static CompletableFuture<CliRunner.Result> migrate(Side src, String... args) {
        List<String> all = new ArrayList<>(List.of("--socket", src.qmpSocket().toString(), "migrate", "drive0"));
        all.addAll(List.of(args));
        return CompletableFuture.supplyAsync(() -> {
            try {
                return CliRunner.run(all.toArray(String[]::new));
            } catch (Exception e) {
                throw new IllegalStateException(e);
            }
        });
    }

    /** Waits (bounded) until the source runs the migration's mirror: the job is there to write under. */
    private static void awaitJob(Side src, String id, CompletableFuture<CliRunner.Result> run) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (System.nanoTime() < deadline) {
            if (run.isDone()) {
                throw new AssertionError("jblockctl ended before its job was seen: " + run.get());
            }
            for (JsonNode j : src.qmp().executeOk("query-block-jobs")) {
                if (j.path("device").asText().equals(id)) {
                    return;
                }
            }
            Thread.sleep(20); // polling the daemon's state, not timing it
        }
        throw new AssertionError("no job " + id + " on " + src.name());
    }

    /** Mirror under guest writes, then hand over or pivot; returns jblockctl's result. */
    private CliRunner.Result migrateUnderWrites(Side src, Side dst, long seed, String... extra) throws Exception {
        return migrateUnderWrites(src, dst, "127.0.0.1:" + QemuNbd.freePort(), seed, extra);
    }

    private CliRunner.Result migrateUnderWrites(Side src, Side dst, String to, long seed, String... extra)
            throws Exception {
        Path guest = guestExport(src);
        List<String> args = new ArrayList<>(List.of("--to", to + "/disk",
                "--dest-socket", dst.qmpSocket().toString(), "--dest-node", "disk0", "--speed", "2M", "--json"));
        args.addAll(List.of(extra));
        CompletableFuture<CliRunner.Result> run = migrate(src, args.toArray(String[]::new));
        awaitJob(src, "migrate-drive0", run);
        guestWrites(guest, seed, 24);
        src.qmp().executeOk("block-job-set-speed", Map.of("device", "migrate-drive0", "speed", 0));
        CliRunner.Result r = run.get(120, TimeUnit.SECONDS);
        assertThat(r.code()).as("seed " + seed + ": " + r.err()).isZero();
        return r;
    }

    private static void assertIdentical(Path a, Path b, String why) throws Exception {
        assertThat(ExternalTools.ok("qemu-img", "compare", "-U", "-f", "raw", "-F", "raw", a.toString(), b.toString()))
                .as(why).contains("Images are identical");
    }

    @Test
    void jblockdToJblockdHandsOverTheFinalContent() throws Exception {
        try (Side src = side("src", false, "drive0", (byte) 0x11); Side dst = side("dst", false, "disk0", (byte) 0)) {
            CliRunner.Result r = migrateUnderWrites(src, dst, 1101);
            JsonNode last = CliRunnerJson.last(r);
            assertThat(last.path("kind").asText()).isEqualTo("migrated");
            assertThat(last.path("outcome").asText()).isEqualTo("handed-over");
            assertThat(last.path("destination").asText()).startsWith("nbd://127.0.0.1:").endsWith("/disk");
            assertIdentical(src.image(), dst.image(), "seed 1101");
            // everything the migration made is gone again: the export and NBD server it started on
            // the destination, the nbd node on the source; the source still runs on its own disk
            assertThat(dst.qmp().executeOk("query-block-exports").size()).isZero();
            assertThat(nodeNames(src)).doesNotContain("migrate-drive0-target");
            assertThat(dst.qmp().executeError("nbd-server-stop", null).get("desc").asText())
                    .isEqualTo("NBD server not running");
        }
    }

    @Test
    void jblockdToQemuPivotsAndLaterWritesLandOnTheDestination() throws Exception {
        try (Side src = side("src", false, "drive0", (byte) 0x22); Side dst = side("dst", true, "disk0", (byte) 0)) {
            CliRunner.Result r = migrateUnderWrites(src, dst, 2202, "--pivot");
            assertThat(CliRunnerJson.last(r).path("outcome").asText()).isEqualTo("pivoted");
            assertIdentical(src.image(), dst.image(), "seed 2202 at the pivot");
            // the guest's export followed the device onto the remote node (QEMU replaces the node
            // under every parent): a write now reaches the destination and not the old disk
            ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 0x99 1M 1M",
                    "nbd+unix:///g?socket=" + src.image().resolveSibling("guest.sock"));
            src.qmp().executeOk("nbd-server-stop");
            ExternalTools.ok("qemu-io", "-U", "-f", "raw", "-r", "-c", "read -P 0x99 1M 1M", dst.image().toString());
            assertThat(ExternalTools.run("qemu-io", "-U", "-f", "raw", "-r", "-c", "read -P 0x99 1M 1M",
                    src.image().toString()).out()).contains("Pattern verification failed");
            assertThat(dst.qmp().executeOk("query-block-exports").size()).as("the export stays: the source uses it")
                    .isEqualTo(1);
        }
    }

    /**
     * Between two hosts (network namespaces joined by a veth pair): jblockctl talks QMP to both
     * daemons over their UNIX sockets, the source daemon reaches the destination over TCP.
     */
    @Test
    void acrossTwoHostsBothWaysWithQemu() throws Exception {
        try (HostPair hosts = HostPair.create()) {
            String to = hosts.b().address() + ":" + HostPair.NBD_PORT;
            try (Side src = side(hosts.a(), "src", false, "drive0", (byte) 0x71);
                 Side dst = side(hosts.b(), "dst", true, "disk0", (byte) 0)) {
                migrateUnderWrites(src, dst, to, 7101);
                assertIdentical(src.image(), dst.image(), "jblockd on A to QEMU on B, seed 7101");
            }
            try (Side src = side(hosts.a(), "src2", true, "drive0", (byte) 0x72);
                 Side dst = side(hosts.b(), "dst2", false, "disk0", (byte) 0)) {
                migrateUnderWrites(src, dst, to, 7202, "--pivot");
                assertIdentical(src.image(), dst.image(), "QEMU on A to jblockd on B, seed 7202");
            }
        }
    }

    @Test
    void qemuToJblockdHandsOverTheFinalContent() throws Exception {
        try (Side src = side("src", true, "drive0", (byte) 0x33); Side dst = side("dst", false, "disk0", (byte) 0)) {
            migrateUnderWrites(src, dst, 3303);
            assertIdentical(src.image(), dst.image(), "seed 3303");
            assertThat(dst.qmp().executeOk("query-block-exports").size()).isZero();
            assertThat(nodeNames(src)).doesNotContain("migrate-drive0-target");
        }
    }

    @Test
    void overTlsIntoARunningTlsServer() throws Exception {
        TestCertificates pki = TestCertificates.create(dir.resolve("pki"));
        try (Side src = side("src", false, "drive0", (byte) 0x44); Side dst = side("dst", false, "disk0", (byte) 0)) {
            int port = QemuNbd.freePort();
            dst.qmp().executeOk("object-add", Map.of("qom-type", "tls-creds-x509", "id", "tls0", "dir",
                    pki.server().toString(), "endpoint", "server"));
            dst.qmp().executeOk("nbd-server-start", Map.of("addr", Map.of("type", "inet", "data",
                    Map.of("host", "127.0.0.1", "port", Integer.toString(port))), "tls-creds", "tls0"));
            // without credentials the source is refused by the TLS-only server, and nothing is left
            CliRunner.Result plain = migrate(src, "--to", "127.0.0.1:" + port + "/disk", "--dest-socket",
                    dst.qmpSocket().toString(), "--dest-node", "disk0").get(120, TimeUnit.SECONDS);
            assertThat(plain.code()).isEqualTo(1);
            assertThat(plain.err()).contains("TLS negotiation required before option 7 (go)");
            assertThat(dst.qmp().executeOk("query-block-exports").size()).isZero();
            src.qmp().executeOk("object-add", Map.of("qom-type", "tls-creds-x509", "id", "c0", "dir",
                    pki.client().toString(), "endpoint", "client"));
            CliRunner.Result r = migrate(src, "--to", "127.0.0.1:" + port + "/disk", "--dest-socket",
                    dst.qmpSocket().toString(), "--dest-node", "disk0", "--tls-creds", "c0")
                    .get(120, TimeUnit.SECONDS);
            assertThat(r.code()).as(r.err()).isZero();
            assertThat(r.out()).contains("drive0: nbd://127.0.0.1:" + port + "/disk holds the disk as of the hand-over");
            assertIdentical(src.image(), dst.image(), "over TLS");
            // the server was the test's: it keeps running (TLS-only), only the export went
            assertThat(dst.qmp().executeError("nbd-server-start", Map.of("addr", Map.of("type", "unix", "data",
                    Map.of("path", dir.resolve("x.sock").toString())))).get("desc").asText())
                    .isEqualTo("NBD server already running");
        }
    }

    @Test
    void aDestinationThatCannotBeReachedLeavesNothingBehind() throws Exception {
        try (Side src = side("src", false, "drive0", (byte) 0x55); Side dst = side("dst", false, "disk0", (byte) 0)) {
            int serving = QemuNbd.freePort();
            dst.qmp().executeOk("nbd-server-start", Map.of("addr", Map.of("type", "inet", "data",
                    Map.of("host", "127.0.0.1", "port", Integer.toString(serving)))));
            int nobody = QemuNbd.freePort();
            // the export is made on the destination's running server, then the source cannot connect
            CliRunner.Result r = migrate(src, "--to", "127.0.0.1:" + nobody, "--dest-socket",
                    dst.qmpSocket().toString(), "--dest-node", "disk0").get(120, TimeUnit.SECONDS);
            assertThat(r.code()).isEqualTo(1);
            assertThat(r.err()).contains("Failed to connect to '127.0.0.1:" + nobody + "'");
            assertThat(dst.qmp().executeOk("query-block-exports").size()).isZero();
            assertThat(nodeNames(src)).doesNotContain("migrate-drive0-target");
            assertThat(src.qmp().executeOk("query-block-jobs").size()).isZero();
            // usage errors: exit 2 before anything connects
            CliRunner.Result u = migrate(src, "--to", "127.0.0.1:1", "--dest-node", "disk0").get(60, TimeUnit.SECONDS);
            assertThat(u.code()).isEqualTo(2);
            assertThat(u.err()).contains("--dest-socket and --dest-node go together");
            u = migrate(src, "--to", "nbd+unix:///e").get(60, TimeUnit.SECONDS);
            assertThat(u.code()).isEqualTo(2);
            assertThat(u.err()).contains("is not HOST:PORT[/EXPORT] or an NBD URI: No valid URL specified");
        }
    }

    /**
     * The destination killed mid-migration with --on-target-error stop: the mirror stops with
     * an error, jblockctl keeps following; the destination comes back on the same port, resume
     * retries, and the hand-over delivers the final content.
     */
    @Test
    void aDestinationKilledMidwayStopsTheMirrorAndResumeFinishesIt() throws Exception {
        try (Side src = side("src", false, "drive0", (byte) 0x66)) {
            Path dd = Files.createDirectories(dir.resolve("dst"));
            Path img = dd.resolve("disk0.raw");
            ExternalTools.ok("qemu-img", "create", "-f", "raw", img.toString(), Long.toString(SIZE));
            int port = QemuNbd.freePort();
            String[] serve = {"--blockdev", "driver=raw,node-name=disk0,file.driver=file,file.filename=" + img,
                    "--nbd-server", "addr.type=inet,addr.host=127.0.0.1,addr.port=" + port,
                    "--export", "type=nbd,id=e,node-name=disk0,name=disk,writable=on"};
            DaemonProcess dst = DaemonProcess.start(dd, serve);
            try {
                Path guest = guestExport(src);
                CompletableFuture<CliRunner.Result> run = migrate(src, "--to", "127.0.0.1:" + port + "/disk",
                        "--speed", "1M", "--on-target-error", "stop");
                awaitJob(src, "migrate-drive0", run);
                dst.process().destroyForcibly().waitFor();
                awaitJobState(src, "migrate-drive0", j -> j.path("io-status").asText().equals("failed")
                        && j.path("paused").asBoolean());
                guestWrites(guest, 6606, 8);
                dst.close();
                dst = DaemonProcess.start(Files.createDirectories(dir.resolve("dst2")), serve);
                src.qmp().executeOk("block-job-set-speed", Map.of("device", "migrate-drive0", "speed", 0));
                src.qmp().executeOk("block-job-resume", Map.of("device", "migrate-drive0"));
                CliRunner.Result r = run.get(120, TimeUnit.SECONDS);
                assertThat(r.code()).as(r.err()).isZero();
                assertThat(r.out()).contains("holds the disk as of the hand-over");
                dst.close();
                assertIdentical(src.image(), img, "after the destination came back");
            } finally {
                dst.close();
            }
        }
    }

    private static void awaitJobState(Side src, String id, java.util.function.Predicate<JsonNode> state)
            throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (System.nanoTime() < deadline) {
            for (JsonNode j : src.qmp().executeOk("query-block-jobs")) {
                if (j.path("device").asText().equals(id) && state.test(j)) {
                    return;
                }
            }
            Thread.sleep(20); // polling the daemon's state, not timing it
        }
        throw new AssertionError("job " + id + " never reached the state; jobs: "
                + src.qmp().executeOk("query-block-jobs"));
    }

    private static List<String> nodeNames(Side s) throws Exception {
        List<String> out = new ArrayList<>();
        for (JsonNode n : s.qmp().executeOk("query-named-block-nodes")) {
            out.add(n.path("node-name").asText());
        }
        return out;
    }

    /** The JSON lines jblockctl --json printed. */
    private static final class CliRunnerJson {
        static JsonNode last(CliRunner.Result r) throws Exception {
            List<String> lines = r.outLines();
            return JblockCtlContract.JSON.readTree(lines.get(lines.size() - 1));
        }
    }
}
