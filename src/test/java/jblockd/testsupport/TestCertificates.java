package jblockd.testsupport;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Test PKI made with openssl as remote.md §6.1 does (gnutls' certtool is not installed): a CA,
 * a server certificate for {@code localhost} / {@code 127.0.0.1}, a client certificate, each in
 * a directory with QEMU's file names ({@code server/} and {@code client/}), plus
 * {@code client-nocert/} (only the CA), {@code other-ca/} (a client signed by another CA) and
 * {@code server-expired/} (a server whose certificate expired a day before it was made:
 * {@code -days -1}). {@link #create(Path, String...)} adds IP addresses to the server
 * certificates' names (a {@link HostPair} end's address). Keys are openssl 3's default PKCS#8.
 */
public final class TestCertificates {
    private final Path root;

    private TestCertificates(Path root) {
        this.root = root;
    }

    public Path server() {
        return root.resolve("server");
    }

    public Path client() {
        return root.resolve("client");
    }

    /** A server certificate of the right CA for the right names, no longer valid. */
    public Path serverExpired() {
        return root.resolve("server-expired");
    }

    /** The CA only: a client without a certificate. */
    public Path clientWithoutCertificate() {
        return root.resolve("client-nocert");
    }

    /** A client whose CA and certificate are another CA's. */
    public Path clientOfOtherCa() {
        return root.resolve("other-ca");
    }

    public static TestCertificates create(Path root) throws IOException, InterruptedException {
        return create(root, new String[0]);
    }

    /** With {@code serverAddresses} (IP addresses) among the server certificates' names too. */
    public static TestCertificates create(Path root, String... serverAddresses) throws IOException,
            InterruptedException {
        ExternalTools.assumeTools("openssl");
        TestCertificates c = new TestCertificates(root);
        Files.createDirectories(c.server());
        Files.createDirectories(c.serverExpired());
        Files.createDirectories(c.client());
        Files.createDirectories(c.clientWithoutCertificate());
        Files.createDirectories(c.clientOfOtherCa());
        Path ext = root.resolve("ext.cnf");
        Files.writeString(ext, """
                [srv]
                basicConstraints=CA:FALSE
                keyUsage=digitalSignature,keyEncipherment
                extendedKeyUsage=serverAuth
                subjectAltName=DNS:localhost,IP:127.0.0.1EXTRA
                [cli]
                basicConstraints=CA:FALSE
                keyUsage=digitalSignature,keyEncipherment
                extendedKeyUsage=clientAuth
                """.replace("EXTRA", extraNames(serverAddresses)));
        ca(root, "ca", "test CA");
        ca(root, "other", "other CA");
        leaf(root, "ca", c.server().resolve("server"), "localhost", "srv", ext, 30);
        leaf(root, "ca", c.serverExpired().resolve("server"), "localhost", "srv", ext, -1);
        leaf(root, "ca", c.client().resolve("client"), "client", "cli", ext, 30);
        leaf(root, "other", c.clientOfOtherCa().resolve("client"), "client", "cli", ext, 30);
        for (Path d : new Path[] {c.server(), c.serverExpired(), c.client(), c.clientWithoutCertificate()}) {
            Files.copy(root.resolve("ca-cert.pem"), d.resolve("ca-cert.pem"));
        }
        Files.copy(root.resolve("other-cert.pem"), c.clientOfOtherCa().resolve("ca-cert.pem"));
        return c;
    }

    private static void ca(Path root, String name, String cn) throws IOException, InterruptedException {
        ExternalTools.ok("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                "-keyout", root.resolve(name + "-key.pem").toString(), "-out", root.resolve(name + "-cert.pem").toString(),
                "-days", "30", "-subj", "/CN=" + cn,
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
    }

    private static String extraNames(String... addresses) {
        StringBuilder b = new StringBuilder();
        for (String a : addresses) {
            b.append(",IP:").append(a);
        }
        return b.toString();
    }

    /**
     * {@code prefix}-key.pem and {@code prefix}-cert.pem signed by CA {@code ca}, valid for
     * {@code days} from now (-1: it ended yesterday).
     */
    private static void leaf(Path root, String ca, Path prefix, String cn, String section, Path ext, int days)
            throws IOException, InterruptedException {
        Path csr = root.resolve(prefix.getParent().getFileName() + "-" + ca + ".csr");
        ExternalTools.ok("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", prefix + "-key.pem",
                "-out", csr.toString(), "-subj", "/CN=" + cn);
        ExternalTools.ok("openssl", "x509", "-req", "-in", csr.toString(), "-CA", root.resolve(ca + "-cert.pem").toString(),
                "-CAkey", root.resolve(ca + "-key.pem").toString(), "-CAcreateserial", "-out", prefix + "-cert.pem",
                "-days", Integer.toString(days), "-extfile", ext.toString(), "-extensions", section);
    }
}
