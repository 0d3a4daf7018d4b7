package jblockd.nbd.client;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.BlockNode;
import jblockd.block.IoError;
import jblockd.block.file.FileDriver;
import jblockd.device.Device;
import jblockd.device.GuestIo;
import jblockd.device.RunState;
import jblockd.nbd.server.NbdExport;
import jblockd.nbd.server.NbdServer;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.QapiEvents;
import jblockd.testsupport.TestCertificates;
import jblockd.tls.ServerTls;
import jblockd.tls.X509Credentials;

/**
 * The client's STARTTLS against jblockd's own TLS server (QEMU's peers are NbdTlsQemuIT's):
 * data both ways with many requests in flight, host names, and each refusal with QEMU's
 * nbd/client.c text.
 */
@Timeout(60)
class NbdClientTlsTest {
    private static final long SIZE = 16L << 20;

    @TempDir
    Path dir;

    private TestCertificates pki;
    private final List<NbdServer> servers = new ArrayList<>();
    private final List<BlockNode> nodes = new ArrayList<>();

    @BeforeEach
    void pki() throws Exception {
        pki = TestCertificates.create(dir.resolve("pki"));
    }

    @AfterEach
    void stop() throws IOException {
        servers.forEach(NbdServer::stop);
        for (BlockNode n : nodes) {
            n.close();
        }
    }

    private X509Credentials creds(Path d, X509Credentials.Endpoint e) throws Exception {
        return X509Credentials.load(d, e, true, true);
    }

    private X509Credentials clientCreds() throws Exception {
        return creds(pki.client(), X509Credentials.Endpoint.CLIENT);
    }

    /** A server on {@code address} with export "e" over a 16 MiB file; TLS when {@code tls}. */
    private SocketAddress serve(SocketAddress address, boolean tls) throws Exception {
        Path img = dir.resolve("disk" + nodes.size() + ".raw");
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
            f.setLength(SIZE);
        }
        BlockNode node = new BlockNode("n" + nodes.size(), false, FileDriver.open(img, false), false);
        nodes.add(node);
        NbdServer s = new NbdServer();
        servers.add(s);
        s.start(address, 0, tls ? ServerTls.withoutAuthz(creds(pki.server(), X509Credentials.Endpoint.SERVER)) : null);
        Device d = new Device("", node, BlockdevOnError.REPORT, BlockdevOnError.REPORT);
        s.addExport(new NbdExport("e", "e", null, true, new GuestIo(d, new RunState(QapiEvents.NONE, () -> { }),
                QapiEvents.NONE)));
        return s.localAddress();
    }

    private SocketAddress unix(boolean tls) throws Exception {
        return serve(UnixDomainSocketAddress.of(dir.resolve("nbd" + servers.size() + ".sock")), tls);
    }

    private static NbdClient.Options tls(X509Credentials c, String host) {
        return NbdClient.Options.of("e", "base:allocation").withTls(new NbdClient.Tls(c, host));
    }

    @Test
    void dataCrossesTlsBothWaysWithRequestsInFlight() throws Exception {
        SocketAddress a = unix(true);
        try (NbdClient c = NbdClient.connect(a, tls(clientCreds(), "localhost"))) {
            assertThat(c.size()).isEqualTo(SIZE);
            assertThat(c.metaContexts()).containsKey("base:allocation");
            // 16 writers at once, 1 MiB each (records of 16 KiB, many per write(2)), then reads
            List<CompletableFuture<Void>> all = new ArrayList<>();
            for (int i = 0; i < 16; i++) {
                int n = i;
                all.add(CompletableFuture.runAsync(() -> {
                    try {
                        c.write((long) n << 20, pattern(n, 1 << 20), false);
                    } catch (IOException e) {
                        throw new RuntimeException(e);
                    }
                }));
            }
            CompletableFuture.allOf(all.toArray(CompletableFuture[]::new)).join();
            c.flush();
            for (int i = 0; i < 16; i++) {
                ByteBuffer got = ByteBuffer.allocate(1 << 20);
                c.read((long) i << 20, got);
                assertThat(got.flip()).as("MiB " + i).isEqualTo(pattern(i, 1 << 20));
            }
            // a small read (below one TLS record) goes through the channel's own buffer
            ByteBuffer small = ByteBuffer.allocate(512);
            c.read(3L << 20, small);
            assertThat(small.flip()).isEqualTo(pattern(3, 512));
        }
    }

    @Test
    void inetHostIsTheDefaultHostname() throws Exception {
        SocketAddress a = serve(new InetSocketAddress("127.0.0.1", 0), true);
        try (NbdClient c = NbdClient.connect(a, tls(clientCreds(), null))) {
            assertThat(c.size()).isEqualTo(SIZE);
        }
    }

    @Test
    void unixSocketNeedsAHostname() throws Exception {
        SocketAddress a = unix(true);
        assertThatThrownBy(() -> NbdClient.connect(a, tls(clientCreds(), null)))
                .isInstanceOf(IoError.class).hasMessage("No hostname for certificate validation");
    }

    @Test
    void hostnameNotInTheCertificateFailsTheHandshake() throws Exception {
        SocketAddress a = unix(true);
        assertThatThrownBy(() -> NbdClient.connect(a, tls(clientCreds(), "other.example")))
                .isInstanceOf(IoError.class).hasMessageStartingWith("TLS handshake failed: ");
    }

    @Test
    void serverCredentialsAreRefusedOnTheClient() throws Exception {
        SocketAddress a = unix(true);
        X509Credentials server = creds(pki.server(), X509Credentials.Endpoint.SERVER);
        assertThatThrownBy(() -> NbdClient.connect(a, tls(server, "localhost")))
                .hasMessage("Expected TLS credentials for a client endpoint");
    }

    @Test
    void plainClientOfTlsServerGetsQemusText() throws Exception {
        SocketAddress a = unix(true);
        assertThatThrownBy(() -> NbdClient.connect(a, NbdClient.Options.of("e")))
                .isInstanceOf(IoError.class).hasMessage("TLS negotiation required before option 7 (go)")
                .cause().hasMessage("server reported: Option 0x7 not permitted before TLS");
    }

    @Test
    void tlsClientOfPlainServerIsDenied() throws Exception {
        SocketAddress a = unix(false);
        assertThatThrownBy(() -> NbdClient.connect(a, tls(clientCreds(), "localhost")))
                .isInstanceOf(IoError.class).hasMessage("Denied by server for option 5 (starttls)")
                .cause().hasMessage("server reported: TLS not configured");
    }

    @Test
    void clientWithoutCertificateIsRefusedAndTheServerServesOthers() throws Exception {
        SocketAddress a = unix(true);
        X509Credentials bare = creds(pki.clientWithoutCertificate(), X509Credentials.Endpoint.CLIENT);
        assertThatThrownBy(() -> NbdClient.connect(a, tls(bare, "localhost"))).isInstanceOf(IOException.class);
        X509Credentials other = creds(pki.clientOfOtherCa(), X509Credentials.Endpoint.CLIENT);
        // the other CA does not know the server either
        assertThatThrownBy(() -> NbdClient.connect(a, tls(other, "localhost"))).isInstanceOf(IOException.class);
        try (NbdClient c = NbdClient.connect(a, tls(clientCreds(), "localhost"))) {
            assertThat(c.size()).isEqualTo(SIZE);
        }
    }

    /**
     * A client certificate the server refuses (another CA's, the client trusting the right CA):
     * in TLS 1.3 the client's side of the handshake is over before the server has checked it,
     * so the server's alert comes as the answer to the first option, and the error names that
     * step as QEMU's nbd/client.c does ("Failed to read option reply: ..."), not the greeting.
     */
    @Test
    void aRefusedClientCertificateFailsReadingTheOptionReply() throws Exception {
        SocketAddress a = unix(true);
        Path stranger = dir.resolve("stranger");
        java.nio.file.Files.createDirectories(stranger);
        java.nio.file.Files.copy(pki.client().resolve("ca-cert.pem"), stranger.resolve("ca-cert.pem"));
        for (String f : new String[] {"client-cert.pem", "client-key.pem"}) {
            java.nio.file.Files.copy(pki.clientOfOtherCa().resolve(f), stranger.resolve(f));
        }
        X509Credentials creds = X509Credentials.load(stranger, X509Credentials.Endpoint.CLIENT, true, false);
        assertThatThrownBy(() -> NbdClient.connect(a, tls(creds, "localhost")))
                .isInstanceOf(IoError.class).hasMessageStartingWith("Failed to read option reply: ")
                .hasMessageContaining("certificate");
    }

    private static ByteBuffer pattern(int seed, int len) {
        ByteBuffer b = ByteBuffer.allocate(len);
        for (int i = 0; i < len; i++) {
            b.put((byte) (seed * 31 + i * 7));
        }
        return b.flip();
    }
}
