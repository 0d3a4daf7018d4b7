package jblockd.nbd.server;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.QemuStorageDaemon;
import jblockd.testsupport.QmpTestClient;
import jblockd.testsupport.TestCertificates;

/**
 * NBD over TLS (remote.md §6) and the objects it needs, side by side with qemu-storage-daemon
 * 7.2: the same QMP sequences on both (object-add / nbd-server-start refusals compared reply by
 * reply), real TLS clients (nbdinfo/nbdcopy with {@code nbds://}, qemu-io/qemu-img with
 * {@code --object tls-creds-x509 --image-opts driver=nbd,...,tls-creds=}), and every failure row
 * of §6.4 against both servers.
 */
class NbdTlsQemuIT {
    @TempDir
    Path dir;

    private TestCertificates pki;

    @BeforeEach
    void setUp() throws Exception {
        ExternalTools.assumeTools("qemu-img", "qemu-io", "qemu-storage-daemon", "nbdinfo", "nbdcopy", "openssl");
        pki = TestCertificates.create(dir.resolve("pki"));
    }

    /** A daemon under test: jblockd or qemu-storage-daemon, seen through QMP. */
    private record Peer(String name, AutoCloseable process, QmpTestClient qmp, Path dir) implements AutoCloseable {
        @Override
        public void close() throws Exception {
            qmp.close();
            process.close();
        }
    }

    private Peer jblockd() throws Exception {
        Path d = Files.createDirectories(dir.resolve("jblockd"));
        DaemonProcess p = DaemonProcess.start(d);
        QmpTestClient c = p.connect();
        return new Peer("jblockd", p, c, d);
    }

    private Peer qsd() throws Exception {
        Path d = Files.createDirectories(dir.resolve("qsd"));
        QemuStorageDaemon p = QemuStorageDaemon.start(d);
        QmpTestClient c = p.connect();
        return new Peer("qsd", p, c, d);
    }

    /** A 64 MiB raw image of the peer's own with 1 MiB of 0xab at 0, as node {@code disk0}. */
    private Path disk(Peer p) throws Exception {
        Path img = p.dir().resolve("disk.raw");
        ExternalTools.ok("qemu-img", "create", "-f", "raw", img.toString(), "64M");
        ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 0xab 0 1M", img.toString());
        p.qmp().executeOk("blockdev-add", Map.of("driver", "raw", "node-name", "disk0",
                "file", Map.of("driver", "file", "filename", img.toString())));
        return img;
    }

    private static Map<String, Object> x509(String id, Path dir, String endpoint) {
        return Map.of("qom-type", "tls-creds-x509", "id", id, "dir", dir.toString(), "endpoint", endpoint);
    }

    /** Server creds tls0, an NBD server on {@code sock} (TLS if asked), export {@code e}. */
    private static void serve(Peer p, Path sock, boolean tls, Path serverCreds) throws IOException {
        Map<String, Object> start = new java.util.LinkedHashMap<>();
        start.put("addr", Map.of("type", "unix", "data", Map.of("path", sock.toString())));
        if (tls) {
            p.qmp().executeOk("object-add", x509("tls0", serverCreds, "server"));
            start.put("tls-creds", "tls0");
        }
        p.qmp().executeOk("nbd-server-start", start);
        p.qmp().executeOk("block-export-add", Map.of("type", "nbd", "id", "e", "node-name", "disk0", "name", "e",
                "writable", true));
    }

    /** The QMP refusals around objects and TLS credentials, reply by reply equal to QSD's. */
    @Test
    void objectAndTlsCredsRepliesMatchQemu() throws Exception {
        Path secretFile = dir.resolve("secret.txt");
        Files.writeString(secretFile, "c2VjcmV0");
        List<Object[]> seq = new ArrayList<>();
        seq.add(new Object[] {"object-add", x509("t0", dir.resolve("nodir"), "server")});
        seq.add(new Object[] {"object-add", x509("tc", pki.client(), "client")});
        seq.add(new Object[] {"object-add", x509("t1", pki.client(), "server")});
        seq.add(new Object[] {"object-add", x509("tc", pki.server(), "server")});
        seq.add(new Object[] {"object-add", Map.of("qom-type", "tls-creds-x509", "id", "t2", "endpoint", "server")});
        seq.add(new Object[] {"object-add", Map.of("qom-type", "tls-creds-x509", "id", "t3", "dir",
                pki.server().toString(), "endpoint", "bogus")});
        seq.add(new Object[] {"object-add", Map.of("qom-type", "tls-creds-x509", "id", "t4", "dir",
                pki.server().toString(), "endpoint", "server", "verify-peer", false, "sanity-check", false)});
        seq.add(new Object[] {"object-add", Map.of("qom-type", "tls-creds-x509", "id", "t5", "dir",
                pki.server().toString(), "bogus", 1)});
        seq.add(new Object[] {"object-add", Map.of("qom-type", "nosuch", "id", "x")});
        seq.add(new Object[] {"object-add", Map.of("qom-type", "secret", "id", "s0", "data", "abc")});
        seq.add(new Object[] {"object-add", Map.of("qom-type", "secret", "id", "s1")});
        seq.add(new Object[] {"object-add", Map.of("qom-type", "secret", "id", "s2", "data", "a",
                "file", secretFile.toString())});
        seq.add(new Object[] {"object-add", Map.of("qom-type", "secret", "id", "s3", "data", "!!", "format", "base64")});
        seq.add(new Object[] {"object-add", Map.of("qom-type", "secret", "id", "s4", "file", secretFile.toString(),
                "format", "base64")});
        seq.add(new Object[] {"object-add", Map.of("qom-type", "secret", "id", "s5", "file",
                dir.resolve("nofile").toString())});
        seq.add(new Object[] {"object-add", Map.of("qom-type", "secret", "id", "s6", "data", "a", "format", "hex")});
        seq.add(new Object[] {"object-add", Map.of("qom-type", "secret", "id", "9bad", "data", "a")});
        seq.add(new Object[] {"object-add", Map.of("qom-type", "secret", "data", "a")});
        seq.add(new Object[] {"object-add", Map.of("id", "x", "data", "a")});
        seq.add(new Object[] {"object-add", Map.of("qom-type", "secret", "id", "s7", "data", 1)});
        seq.add(new Object[] {"object-add", Map.of("qom-type", "secret", "id", "s8", "data", "a", "loaded", true)});
        Path sock = dir.resolve("refused.sock");
        Map<String, Object> addr = Map.of("type", "unix", "data", Map.of("path", sock.toString()));
        seq.add(new Object[] {"nbd-server-start", Map.of("addr", addr, "tls-creds", "tc")});
        seq.add(new Object[] {"nbd-server-start", Map.of("addr", addr, "tls-creds", "nosuch")});
        seq.add(new Object[] {"nbd-server-start", Map.of("addr", addr, "tls-creds", "s0")});
        seq.add(new Object[] {"object-del", Map.of("id", "nosuch")});
        seq.add(new Object[] {"object-del", Map.of("id", "tc")});
        seq.add(new Object[] {"object-del", Map.of("id", "tc")});
        seq.add(new Object[] {"object-del", Map.of("id", "s0")});

        List<String> ours;
        List<String> theirs;
        try (Peer j = jblockd()) {
            ours = replies(j, seq);
        }
        try (Peer q = qsd()) {
            theirs = replies(q, seq);
        }
        assertThat(ours).containsExactlyElementsOf(theirs);
    }

    private static List<String> replies(Peer p, List<Object[]> seq) throws IOException {
        List<String> out = new ArrayList<>();
        for (Object[] c : seq) {
            JsonNode r = p.qmp().execute((String) c[0], c[1]);
            out.add(c[0] + " " + c[1] + " -> " + (r.has("error") ? r.get("error").toString() : r.get("return")));
        }
        return out;
    }

    /** nbdinfo/nbdcopy (libnbd, GnuTLS) and qemu-io/qemu-img (QEMU's client) over TLS, TCP. */
    @Test
    void tlsServerServesLibnbdAndQemuClients() throws Exception {
        try (Peer j = jblockd()) {
            Path img = disk(j);
            int port = freePort();
            j.qmp().executeOk("object-add", x509("tls0", pki.server(), "server"));
            j.qmp().executeOk("nbd-server-start", Map.of("addr", Map.of("type", "inet", "data",
                    Map.of("host", "127.0.0.1", "port", String.valueOf(port))), "tls-creds", "tls0"));
            j.qmp().executeOk("block-export-add", Map.of("type", "nbd", "id", "e", "node-name", "disk0",
                    "name", "e", "writable", true));
            String nbds = "nbds://127.0.0.1:" + port + "/e?tls-certificates=" + pki.client();
            assertThat(ExternalTools.ok("nbdinfo", nbds)).contains("newstyle-fixed with TLS")
                    .contains("export-size: 67108864");
            // the guest writes through QEMU's TLS client, checked back by the same client
            String opts = "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=" + port
                    + ",export=e,tls-creds=tls0";
            String creds = "tls-creds-x509,id=tls0,endpoint=client,dir=" + pki.client();
            String io = ExternalTools.ok("qemu-io", "--object", creds, "--image-opts", opts,
                    "-c", "write -P 0x5a 4M 3M", "-c", "read -P 0x5a 4M 3M", "-c", "read -P 0xab 0 1M");
            assertThat(io).doesNotContain("Pattern verification failed");
            // host name checked against the certificate's DNS name too
            assertThat(ExternalTools.ok("qemu-img", "info", "--object", creds, "--image-opts",
                    opts.replace("127.0.0.1", "localhost"))).contains("virtual size: 64 MiB");
            // a whole copy through libnbd equals the image the daemon holds
            Path copy = dir.resolve("copy.raw");
            ExternalTools.ok("nbdcopy", nbds, copy.toString());
            j.qmp().executeOk("nbd-server-stop");
            assertThat(ExternalTools.ok("qemu-img", "compare", "-U", "-f", "raw", "-F", "raw", img.toString(),
                    copy.toString())).contains("Images are identical");
            // and a copy into the export: 0x77 at 8M lands in the image
            Path src = dir.resolve("src.raw");
            ExternalTools.ok("qemu-img", "create", "-f", "raw", src.toString(), "64M");
            ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 0x77 8M 2M", src.toString());
            j.qmp().executeOk("nbd-server-start", Map.of("addr", Map.of("type", "inet", "data",
                    Map.of("host", "127.0.0.1", "port", String.valueOf(port))), "tls-creds", "tls0"));
            j.qmp().executeOk("block-export-add", Map.of("type", "nbd", "id", "e", "node-name", "disk0",
                    "name", "e", "writable", true));
            ExternalTools.ok("nbdcopy", src.toString(), nbds);
            j.qmp().executeOk("nbd-server-stop");
            ExternalTools.ok("qemu-io", "-U", "-f", "raw", "-r", "-c", "read -P 0x77 8M 2M", "-c", "read -P 0 0 1M",
                    img.toString());
        }
    }

    /**
     * remote.md §6.4 on both servers over a UNIX socket: a plain client meets TLS_REQD (or is
     * dropped), a client without a certificate or with another CA's is refused, a TLS client of
     * a plain server is denied; after each, a good client still works.
     */
    @Test
    void failureRowsAsQemu() throws Exception {
        for (boolean qemu : new boolean[] {false, true}) {
            try (Peer p = qemu ? qsd() : jblockd()) {
                disk(p);
                Path sock = p.dir().resolve("nbd.sock");
                serve(p, sock, true, pki.server());
                String plainOpts = "driver=nbd,server.type=unix,server.path=" + sock + ",export=e";
                ExternalTools.Result r = ExternalTools.run("qemu-io", "--image-opts", plainOpts, "-c", "read 0 4k");
                assertThat(r.exit()).as(p.name()).isNotZero();
                assertThat(r.out()).as(p.name()).contains("TLS negotiation required before option 7 (go)")
                        .contains("server reported: Option 0x7 not permitted before TLS");
                r = ExternalTools.run("nbdinfo", "nbd+unix:///e?socket=" + sock);
                assertThat(r.out()).as(p.name())
                        .contains("server replied with error to opt_go request: Operation not supported for export: e");
                r = ExternalTools.run("nbdinfo", "--list", "nbd+unix:///e?socket=" + sock);
                assertThat(r.out()).as(p.name())
                        .contains("server replied with error to list request: Operation not supported");
                // refused certificates: the texts are GnuTLS' view of each server's way of
                // ending the handshake, so only the refusal is compared
                for (Path creds : List.of(pki.clientWithoutCertificate(), pki.clientOfOtherCa())) {
                    r = ExternalTools.run("nbdinfo", "nbds+unix:///e?socket=" + sock + "&tls-certificates=" + creds);
                    assertThat(r.exit()).as(p.name() + " " + creds + ": " + r.out()).isNotZero();
                    assertThat(r.out()).as(p.name()).doesNotContain("export-size");
                }
                r = ExternalTools.run("qemu-io", "--object", "tls-creds-x509,id=tls0,endpoint=client,dir="
                        + pki.clientWithoutCertificate(), "--image-opts", plainOpts + ",tls-creds=tls0,tls-hostname=localhost",
                        "-c", "read 0 4k");
                assertThat(r.exit()).as(p.name() + ": " + r.out()).isNotZero();
                // QEMU's client meets the refusal reading or still writing, by timing (both seen
                // against qemu-storage-daemon itself)
                assertThat(r.out()).as(p.name()).containsAnyOf("Cannot read from TLS channel", "Cannot write to TLS channel");
                // the server is intact
                assertThat(ExternalTools.ok("nbdinfo", "nbds+unix:///e?socket=" + sock + "&tls-certificates="
                        + pki.client())).as(p.name()).contains("newstyle-fixed with TLS");
                p.qmp().executeOk("nbd-server-stop");

                // a plain server and TLS clients
                serve(p, sock, false, null);
                r = ExternalTools.run("qemu-io", "--object", "tls-creds-x509,id=tls0,endpoint=client,dir=" + pki.client(),
                        "--image-opts", plainOpts + ",tls-creds=tls0,tls-hostname=localhost", "-c", "read 0 4k");
                assertThat(r.exit()).as(p.name()).isNotZero();
                assertThat(r.out()).as(p.name()).contains("Denied by server for option 5 (starttls)")
                        .contains("server reported: TLS not configured");
                r = ExternalTools.run("nbdinfo", "nbds+unix:///e?socket=" + sock + "&tls-certificates=" + pki.client());
                assertThat(r.exit()).as(p.name()).isNotZero();
                assertThat(r.out()).as(p.name()).contains("nbd_connect_uri: connection is closed");
                p.qmp().executeOk("nbd-server-stop");
            }
        }
    }

    /**
     * tls-authz with authz-simple and authz-list (glob and exact rules, default policies) on both
     * servers: the same clients admitted and refused; a missing or non-authz object refuses
     * every client (looked up per connection, as QEMU does). jblockd's log names the identity.
     */
    @Test
    void tlsAuthzAdmitsTheSameClientsAsQemu() throws Exception {
        List<Object[]> objects = List.of(
                new Object[] {"object-add", Map.of("qom-type", "authz-simple", "id", "simple-ok", "identity", "CN=client")},
                new Object[] {"object-add", Map.of("qom-type", "authz-simple", "id", "simple-no", "identity", "CN=other")},
                new Object[] {"object-add", Map.of("qom-type", "authz-list", "id", "glob-deny", "policy", "allow",
                        "rules", List.of(Map.of("match", "CN=cl*", "policy", "deny", "format", "glob")))},
                new Object[] {"object-add", Map.of("qom-type", "authz-list", "id", "exact-allow",
                        "rules", List.of(Map.of("match", "CN=nobody", "policy", "deny"),
                                Map.of("match", "CN=client", "policy", "allow")))},
                new Object[] {"object-add", Map.of("qom-type", "authz-list", "id", "empty")},
                new Object[] {"object-add", Map.of("qom-type", "authz-simple", "id", "bad1")},
                new Object[] {"object-add", Map.of("qom-type", "authz-list", "id", "bad2", "policy", "maybe")},
                new Object[] {"object-add", Map.of("qom-type", "authz-list", "id", "bad3",
                        "rules", List.of(Map.of("policy", "allow")))},
                new Object[] {"object-add", Map.of("qom-type", "authz-list", "id", "bad4",
                        "rules", List.of(Map.of("match", "x", "policy", "allow", "format", "regex")))},
                new Object[] {"object-add", Map.of("qom-type", "secret", "id", "s0", "data", "x")});
        List<String> authzIds = List.of("simple-ok", "simple-no", "glob-deny", "exact-allow", "empty", "nosuch", "s0");
        Map<String, List<String>> seen = new java.util.LinkedHashMap<>();
        for (boolean qemu : new boolean[] {false, true}) {
            try (Peer p = qemu ? qsd() : jblockd()) {
                disk(p);
                List<String> out = replies(p, objects);
                p.qmp().executeOk("object-add", x509("tls0", pki.server(), "server"));
                Path sock = p.dir().resolve("nbd.sock");
                for (String authz : authzIds) {
                    p.qmp().executeOk("nbd-server-start", Map.of("addr", Map.of("type", "unix", "data",
                            Map.of("path", sock.toString())), "tls-creds", "tls0", "tls-authz", authz));
                    p.qmp().executeOk("block-export-add", Map.of("type", "nbd", "id", "e", "node-name", "disk0",
                            "name", "e"));
                    ExternalTools.Result r = ExternalTools.run("nbdinfo", "--size", "nbds+unix:///e?socket=" + sock
                            + "&tls-certificates=" + pki.client());
                    out.add(authz + " -> " + (r.exit() == 0 ? r.out().strip() : "refused"));
                    p.qmp().executeOk("nbd-server-stop");
                }
                seen.put(p.name(), out);
                if (!qemu) {
                    String log = ((DaemonProcess) p.process()).stderr();
                    assertThat(log).contains("TLS x509 authz check for CN=client is denied")
                            .contains("Cannot find QAuthZ object ID nosuch")
                            .contains("Object 's0' is not a QAuthZ subclass");
                }
            }
        }
        assertThat(seen.get("jblockd")).containsExactlyElementsOf(seen.get("qsd"));
        assertThat(seen.get("jblockd")).contains("simple-ok -> 67108864", "exact-allow -> 67108864",
                "simple-no -> refused", "glob-deny -> refused", "empty -> refused");
    }

    /**
     * Where QEMU 7.2 accepts tls-authz and then ignores it (no tls-creds; credentials that do
     * not ask for client certificates), jblockd refuses it: see README's differences.
     */
    @Test
    void tlsAuthzThatCouldNotBeEnforcedIsRefused() throws Exception {
        try (Peer j = jblockd()) {
            disk(j);
            j.qmp().executeOk("object-add", Map.of("qom-type", "authz-simple", "id", "az", "identity", "CN=client"));
            j.qmp().executeOk("object-add", Map.of("qom-type", "tls-creds-x509", "id", "open", "dir",
                    pki.server().toString(), "endpoint", "server", "verify-peer", false));
            Map<String, Object> addr = Map.of("type", "unix", "data", Map.of("path", j.dir().resolve("n.sock").toString()));
            assertThat(j.qmp().executeError("nbd-server-start", Map.of("addr", addr, "tls-authz", "az"))
                    .get("desc").asText()).isEqualTo("'tls-authz' is only supported when 'tls-creds' is set");
            assertThat(j.qmp().executeError("nbd-server-start", Map.of("addr", addr, "tls-creds", "open",
                    "tls-authz", "az")).get("desc").asText())
                    .isEqualTo("'tls-authz' needs client certificates, but the TLS credentials have verify-peer=off");
            // nothing half-started: the credentials are free and the server starts plainly
            j.qmp().executeOk("object-del", Map.of("id", "open"));
            j.qmp().executeOk("nbd-server-start", Map.of("addr", addr));
            assertThat(j.qmp().executeError("object-add", Map.of("qom-type", "tls-creds-psk", "id", "p",
                    "dir", pki.server().toString())).get("desc").asText())
                    .contains("the JDK's TLS has no pre-shared-key cipher suites");
        }
    }

    /**
     * jblockd's nbd driver as the TLS client of qemu-nbd 7.2's TLS server (the other direction
     * of the interop): data reads back, a mirror into it lands, and without credentials the
     * open is refused with QEMU's own text.
     */
    @Test
    void theNbdDriverIsAClientOfQemuNbdOverTls() throws Exception {
        Path img = dir.resolve("served.raw");
        ExternalTools.ok("qemu-img", "create", "-f", "raw", img.toString(), "32M");
        ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 0x3c 1M 2M", img.toString());
        Path sock = dir.resolve("qemu-nbd.sock");
        try (jblockd.testsupport.QemuNbd server = jblockd.testsupport.QemuNbd.start(sock, img, "raw", "e",
                "--object", "tls-creds-x509,id=tls0,endpoint=server,dir=" + pki.server(), "--tls-creds", "tls0");
             Peer j = jblockd()) {
            Map<String, Object> node = new java.util.LinkedHashMap<>(Map.of("driver", "nbd", "node-name", "remote",
                    "server", Map.of("type", "unix", "path", sock.toString()), "export", "e"));
            assertThat(j.qmp().executeError("blockdev-add", node).get("desc").asText())
                    .contains("TLS negotiation required before option 7 (go)");
            j.qmp().executeOk("object-add", x509("c0", pki.client(), "client"));
            node.put("tls-creds", "c0");
            node.put("tls-hostname", "localhost");
            j.qmp().executeOk("blockdev-add", node);
            // read through the node: export it plainly and check with qemu-io
            Path plain = j.dir().resolve("plain.sock");
            j.qmp().executeOk("nbd-server-start", Map.of("addr", Map.of("type", "unix", "data",
                    Map.of("path", plain.toString()))));
            j.qmp().executeOk("block-export-add", Map.of("type", "nbd", "id", "x", "node-name", "remote", "name", "x",
                    "writable", true));
            ExternalTools.ok("qemu-io", "-f", "raw", "-c", "read -P 0x3c 1M 2M", "-c", "write -P 0x4d 8M 1M",
                    "nbd+unix:///x?socket=" + plain);
            j.qmp().executeOk("nbd-server-stop");
            j.qmp().executeOk("blockdev-del", Map.of("node-name", "remote"));
        }
        ExternalTools.ok("qemu-io", "-f", "raw", "-r", "-c", "read -P 0x4d 8M 1M", img.toString());
    }

    /** Credentials the running server holds cannot go (QEMU 7.2 lets them go; see README). */
    @Test
    void credentialsInUseCannotBeDeleted() throws Exception {
        try (Peer j = jblockd()) {
            disk(j);
            serve(j, j.dir().resolve("nbd.sock"), true, pki.server());
            assertThat(j.qmp().executeError("object-del", Map.of("id", "tls0")).get("desc").asText())
                    .isEqualTo("object 'tls0' is in use, can not be deleted");
            assertThat(j.qmp().executeOk("query-objects").toString())
                    .isEqualTo("[{\"id\":\"tls0\",\"qom-type\":\"tls-creds-x509\"}]");
            j.qmp().executeOk("nbd-server-stop");
            j.qmp().executeOk("object-del", Map.of("id", "tls0"));
            assertThat(j.qmp().executeOk("query-objects").size()).isZero();
        }
    }

    /** {@code --object} on the command line: the same start-up refusals as QSD's, and help. */
    @Test
    void commandLineObjectsAsQemu() throws Exception {
        List<List<String>> cases = List.of(
                List.of("--object", "secret,id=s0"),
                List.of("--object", "{\"qom-type\":\"secret\",\"id\":\"s0\",\"data\":\"x\",\"bogus\":1}"),
                List.of("--object", "nosuch,id=x"),
                List.of("--object", "tls-creds-x509,id=t,dir=" + dir.resolve("nodir")),
                List.of("--object", "secret,id=s0,data=x", "--object", "secret,id=s0,data=y"),
                List.of("--object", "tls-creds-x509,id=t,dir=" + pki.client() + ",endpoint=client,verify-peer=maybe"));
        for (List<String> args : cases) {
            List<String> q = new ArrayList<>(List.of("qemu-storage-daemon"));
            q.addAll(args);
            ExternalTools.Result theirs = ExternalTools.run(q.toArray(String[]::new));
            try (DaemonProcess ours = DaemonProcess.startRaw(Files.createDirectories(dir.resolve("cl")),
                    args.toArray(String[]::new))) {
                assertThat(ours.waitFor(java.time.Duration.ofSeconds(60))).as(args.toString()).isEqualTo(1);
                assertThat(theirs.exit()).as(args.toString()).isEqualTo(1);
                String want = theirs.out().strip().replaceFirst("^qemu-storage-daemon: ", "");
                assertThat(ours.stderr()).as(args.toString()).contains("jblockd: " + want);
            }
        }
        try (DaemonProcess help = DaemonProcess.startRaw(Files.createDirectories(dir.resolve("help")),
                "--object", "help")) {
            assertThat(help.waitFor(java.time.Duration.ofSeconds(60))).isZero();
            assertThat(help.stdout()).contains("List of user creatable objects:", "  secret", "  tls-creds-x509");
        }
    }

    private static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0)) {
            return s.getLocalPort();
        }
    }

    /**
     * The nbd block driver as a TLS client (blockdev-add driver=nbd tls-creds, the live-migration
     * link): jblockd and qemu-storage-daemon 7.2 as clients of one jblockd TLS server over a UNIX
     * socket, the same steps and replies: no creds, unknown creds, server-endpoint creds, no
     * tls-hostname, then a working node whose data is the export's, and its credentials busy.
     */
    @Test
    void theNbdDriverConnectsOverTlsAsQemuDoes() throws Exception {
        Path sd = Files.createDirectories(dir.resolve("server"));
        DaemonProcess sp = DaemonProcess.start(sd);
        try (Peer server = new Peer("server", sp, sp.connect(), sd)) {
            disk(server);
            Path sock = server.dir().resolve("tls.sock");
            serve(server, sock, true, pki.server());
            List<String> jb;
            List<String> qemu;
            try (Peer c = qsd()) {
                qemu = tlsClientSteps(c, sock);
            }
            try (Peer c = jblockd()) {
                jb = tlsClientSteps(c, sock);
            }
            assertThat(jb).containsExactlyElementsOf(qemu);
        }
    }

    private List<String> tlsClientSteps(Peer c, Path sock) throws Exception {
        List<String> seen = new ArrayList<>();
        Map<String, Object> server = Map.of("type", "unix", "path", sock.toString());
        java.util.function.Function<Map<String, Object>, Map<String, Object>> node = extra -> {
            Map<String, Object> m = new java.util.LinkedHashMap<>(Map.of("driver", "nbd", "node-name", "r",
                    "server", server, "export", "e"));
            m.putAll(extra);
            return m;
        };
        seen.add(c.qmp().executeError("blockdev-add", node.apply(Map.of())).path("desc").asText());
        seen.add(c.qmp().executeError("blockdev-add", node.apply(Map.of("tls-creds", "nosuch", "tls-hostname", "localhost")))
                .path("desc").asText());
        c.qmp().executeOk("object-add", x509("srv", pki.server(), "server"));
        seen.add(c.qmp().executeError("blockdev-add", node.apply(Map.of("tls-creds", "srv", "tls-hostname", "localhost")))
                .path("desc").asText());
        c.qmp().executeOk("object-add", x509("cli", pki.client(), "client"));
        seen.add(c.qmp().executeError("blockdev-add", node.apply(Map.of("tls-creds", "cli"))).path("desc").asText());
        c.qmp().executeOk("blockdev-add", node.apply(Map.of("tls-creds", "cli", "tls-hostname", "localhost")));
        for (JsonNode n : c.qmp().executeOk("query-named-block-nodes")) {
            if (n.path("node-name").asText().equals("r")) {
                seen.add(n.path("drv").asText() + " " + n.path("image").path("virtual-size").asLong());
            }
        }
        c.qmp().executeOk("nbd-server-start", Map.of("addr", Map.of("type", "unix", "data",
                Map.of("path", c.dir().resolve("plain.sock").toString()))));
        c.qmp().executeOk("block-export-add", Map.of("type", "nbd", "id", "again", "node-name", "r", "name", "again"));
        seen.add(ExternalTools.run("qemu-io", "-r", "-f", "raw", "-c", "read -P 0xab 0 1M",
                "nbd+unix:///again?socket=" + c.dir().resolve("plain.sock")).out().contains("read 1048576/1048576")
                ? "reads the remote data" : "no data");
        c.qmp().executeOk("block-export-del", Map.of("id", "again"));
        c.qmp().waitEvent("BLOCK_EXPORT_DELETED", java.time.Duration.ofSeconds(10));
        c.qmp().executeOk("blockdev-del", Map.of("node-name", "r"));
        return seen;
    }
}
