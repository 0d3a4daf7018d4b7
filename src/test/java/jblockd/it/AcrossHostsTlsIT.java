package jblockd.it;

import static jblockd.it.AcrossHosts.assertIdentical;
import static jblockd.it.AcrossHosts.event;
import static jblockd.it.AcrossHosts.m;
import static jblockd.it.AcrossHosts.raw;
import static jblockd.it.AcrossHosts.rawNode;
import static jblockd.it.AcrossHosts.sha256;
import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.HostPair;
import jblockd.testsupport.NbdPeer;
import jblockd.testsupport.TestCertificates;

/**
 * NBD over TLS between two hosts (issue 15, Verify; remote.md §6): jblockd servers on host B
 * (TLS with a certificate naming B's address, TLS with an expired certificate, plain), and on
 * host A two clients, jblockd and qemu-storage-daemon 7.2, making the same nbd nodes. Each
 * refusal must give a clear error on both sides (the client's blockdev-add reply, the server's
 * log) and move no data.
 */
class AcrossHostsTlsIT {
    private static final int TLS = HostPair.NBD_PORT;
    private static final int EXPIRED = HostPair.NBD_PORT + 1;
    private static final int PLAIN = HostPair.NBD_PORT + 2;

    @TempDir
    Path dir;

    /**
     * A client's credentials object {@code id} over {@code creds}, added on both clients;
     * without the sanity check (which refuses a certificate its own CA did not sign) when
     * {@code !check}.
     */
    private static void clientCreds(List<NbdPeer> clients, String id, Path creds, boolean check) throws Exception {
        for (NbdPeer c : clients) {
            c.qmp().executeOk("object-add", m("qom-type", "tls-creds-x509", "id", id, "dir", creds.toString(),
                    "endpoint", "client", "sanity-check", check));
        }
    }

    /** blockdev-add of an nbd node to B's export "e" on {@code port}: "ok" or the error's desc. */
    private static String open(NbdPeer client, HostPair hosts, int port, String creds) throws Exception {
        Map<String, Object> args = m("driver", "nbd", "node-name", "n", "server", m("type", "inet", "host",
                hosts.b().address(), "port", Integer.toString(port)), "export", "e");
        if (creds != null) {
            args.put("tls-creds", creds);
        }
        JsonNode r = client.qmp().execute("blockdev-add", args);
        if (r.has("error")) {
            assertThat(client.qmp().executeOk("query-named-block-nodes").toString()).doesNotContain("\"n\"");
            return r.get("error").get("desc").asText();
        }
        client.qmp().executeOk("blockdev-del", m("node-name", "n"));
        return "ok";
    }

    /** What one attempt did: each client's answer, and what the server logged about it. */
    private record Attempt(String jblockd, String qemu, String serverLog) {
    }

    private static Attempt attempt(NbdPeer j, NbdPeer q, HostPair hosts, int port, String creds, DaemonProcess server)
            throws Exception {
        int logged = server.stderr().length();
        String mine = open(j, hosts, port, creds);
        String theirs = open(q, hosts, port, creds);
        // the server logs after the client saw the error, and the pump copies its pipe on its own thread
        long deadline = System.nanoTime() + Duration.ofSeconds(3).toNanos();
        while (server.stderr().length() == logged && System.nanoTime() < deadline) {
            Thread.sleep(10); // polling the server's log, not ordering against it
        }
        Attempt a = new Attempt(mine, theirs, server.stderr().substring(logged));
        System.out.println("port " + port + " creds " + creds + ":\n  jblockd client: " + mine
                + "\n  qemu client:    " + theirs + "\n  server log:     " + a.serverLog().strip());
        return a;
    }

    @Test
    void tlsRefusalsAreClearOnBothSidesAndMoveNoData() throws Exception {
        ExternalTools.assumeTools("qemu-img", "qemu-io", "qemu-storage-daemon", "openssl", "sha256sum");
        try (HostPair hosts = HostPair.create()) {
            TestCertificates pki = TestCertificates.create(dir.resolve("pki"), hosts.b().address());
            // a client trusting the right CA whose own certificate is another CA's
            Path strangerClient = Files.createDirectories(dir.resolve("pki/stranger"));
            Files.copy(pki.client().resolve("ca-cert.pem"), strangerClient.resolve("ca-cert.pem"));
            for (String f : new String[] {"client-cert.pem", "client-key.pem"}) {
                Files.copy(pki.clientOfOtherCa().resolve(f), strangerClient.resolve(f));
            }
            Path bImg = Files.createDirectories(dir.resolve("b-img"));
            Path disk = raw(bImg, "disk.raw", "write -P 0x3c 0 4M");
            String before = sha256(disk);
            String exportE = "type=nbd,id=e,node-name=disk,name=e,writable=on";
            // three servers of one image (never written at once): no image locks between them
            String blockdev = "driver=raw,node-name=disk,file.driver=file,file.filename=" + disk + ",file.locking=off";
            try (NbdPeer tls = NbdPeer.jblockd(hosts.b(), TLS, dir.resolve("b-tls"), "--object",
                         "tls-creds-x509,id=tls0,endpoint=server,dir=" + pki.server(), "--blockdev", blockdev,
                         "--export", exportE);
                 NbdPeer expired = NbdPeer.jblockd(hosts.b(), EXPIRED, dir.resolve("b-expired"), "--object",
                         "tls-creds-x509,id=tls0,endpoint=server,sanity-check=off,dir=" + pki.serverExpired(),
                         "--blockdev", blockdev, "--export", exportE);
                 NbdPeer plain = NbdPeer.jblockd(hosts.b(), PLAIN, dir.resolve("b-plain"), "--blockdev", blockdev,
                         "--export", exportE);
                 NbdPeer j = NbdPeer.jblockd(hosts.a(), dir.resolve("a-j"));
                 NbdPeer q = NbdPeer.qsd(hosts.a(), HostPair.NBD_PORT + 1, dir.resolve("a-q"))) {
                List<NbdPeer> clients = List.of(j, q);
                clientCreds(clients, "good", pki.client(), true);
                clientCreds(clients, "wrongca", pki.clientOfOtherCa(), true);
                clientCreds(clients, "stranger", strangerClient, false);
                DaemonProcess tlsLog = (DaemonProcess) tls.process();
                DaemonProcess expiredLog = (DaemonProcess) expired.process();
                DaemonProcess plainLog = (DaemonProcess) plain.process();

                // the certificate names B's address: no tls-hostname needed across the link
                Attempt ok = attempt(j, q, hosts, TLS, "good", tlsLog);
                assertThat(List.of(ok.jblockd(), ok.qemu())).containsOnly("ok");

                List<String> problems = new ArrayList<>();
                // the server's certificate is not signed by the CA the client trusts
                Attempt wrongCa = attempt(j, q, hosts, TLS, "wrongca", tlsLog);
                expectRefused(problems, "wrong CA", wrongCa);
                // the client's certificate is another CA's: the server refuses it
                Attempt stranger = attempt(j, q, hosts, TLS, "stranger", tlsLog);
                expectRefused(problems, "client certificate of another CA", stranger);
                // the server's certificate has expired
                Attempt exp = attempt(j, q, hosts, EXPIRED, "good", expiredLog);
                expectRefused(problems, "expired server certificate", exp);
                // plain client, TLS-only server: QEMU's texts, the same on both clients (remote.md §6.4)
                Attempt plainToTls = attempt(j, q, hosts, TLS, null, tlsLog);
                assertThat(plainToTls.jblockd()).isEqualTo(plainToTls.qemu())
                        .isEqualTo("TLS negotiation required before option 7 (go)");
                assertThat(plainToTls.serverLog()).as("server log").containsIgnoringCase("TLS");
                // TLS client, plain server
                Attempt tlsToPlain = attempt(j, q, hosts, PLAIN, "good", plainLog);
                assertThat(tlsToPlain.jblockd()).isEqualTo(tlsToPlain.qemu())
                        .isEqualTo("Denied by server for option 5 (starttls)");
                assertThat(tlsToPlain.serverLog()).as("server log").contains("TLS not configured");
                // a refused client certificate: QEMU's step named (the server's alert answers the first option)
                assertThat(stranger.jblockd()).startsWith("Failed to read option reply: ");
                assertThat(stranger.qemu()).startsWith("Failed to read option reply: ");
                assertThat(problems).isEmpty();

                // with the right credentials data moves: a backup from A across TLS
                Path src = raw(Files.createDirectories(dir.resolve("a-img")), "src.raw", "write -P 0x4d 0 2M");
                rawNode(j, "src", src);
                j.qmp().executeOk("blockdev-add", m("driver", "nbd", "node-name", "tgt", "server", m("type", "inet",
                        "host", hosts.b().address(), "port", Integer.toString(TLS)), "export", "e", "tls-creds",
                        "good"));
                assertThat(sha256(disk)).as("no data moved by the refused attempts").isEqualTo(before);
                j.qmp().executeOk("blockdev-backup", m("device", "src", "target", "tgt", "sync", "full",
                        "job-id", "b"));
                JsonNode done = event(j, "BLOCK_JOB_COMPLETED", "b");
                assertThat(done.get("data").has("error")).as(done.toString()).isFalse();
                assertIdentical(src, disk, "B's disk after a backup over TLS");
            }
        }
    }

    /** Both clients refused, each with a message naming TLS or the certificate; the server logged it. */
    private static void expectRefused(List<String> problems, String what, Attempt a) {
        if (a.jblockd().equals("ok") || a.qemu().equals("ok")) {
            problems.add(what + ": accepted (jblockd " + a.jblockd() + ", qemu " + a.qemu() + ")");
        }
        if (!a.jblockd().matches("(?is).*(tls|certificate).*")) {
            problems.add(what + ": jblockd client's error does not say TLS: " + a.jblockd());
        }
        String log = a.serverLog();
        if (!log.matches("(?is).*(tls|certificate).*")) {
            problems.add(what + ": the server logged nothing about TLS: " + log);
        }
    }
}
