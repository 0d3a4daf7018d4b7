package jblockd.testsupport;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Test PKI made with openssl as remote.md §6.1 does (gnutls' certtool is not installed): a CA,
 * a server certificate for {@code localhost} / {@code 127.0.0.1}, a client certificate, each in
 * a directory with QEMU's file names ({@code server/} and {@code client/}), plus
 * {@code client-nocert/} (only the CA) and {@code other-ca/} (a client signed by another CA).
 * Keys are openssl 3's default PKCS#8.
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

    /** The CA only: a client without a certificate. */
    public Path clientWithoutCertificate() {
        return root.resolve("client-nocert");
    }

    /** A client whose CA and certificate are another CA's. */
    public Path clientOfOtherCa() {
        return root.resolve("other-ca");
    }

    public static TestCertificates create(Path root) throws IOException, InterruptedException {
        ExternalTools.assumeTools("openssl");
        TestCertificates c = new TestCertificates(root);
        Files.createDirectories(c.server());
        Files.createDirectories(c.client());
        Files.createDirectories(c.clientWithoutCertificate());
        Files.createDirectories(c.clientOfOtherCa());
        Path ext = root.resolve("ext.cnf");
        Files.writeString(ext, """
                [srv]
                basicConstraints=CA:FALSE
                keyUsage=digitalSignature,keyEncipherment
                extendedKeyUsage=serverAuth
                subjectAltName=DNS:localhost,IP:127.0.0.1
                [cli]
                basicConstraints=CA:FALSE
                keyUsage=digitalSignature,keyEncipherment
                extendedKeyUsage=clientAuth
                """);
        ca(root, "ca", "test CA");
        ca(root, "other", "other CA");
        leaf(root, "ca", c.server().resolve("server"), "localhost", "srv", ext);
        leaf(root, "ca", c.client().resolve("client"), "client", "cli", ext);
        leaf(root, "other", c.clientOfOtherCa().resolve("client"), "client", "cli", ext);
        for (Path d : new Path[] {c.server(), c.client(), c.clientWithoutCertificate()}) {
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

    /** {@code prefix}-key.pem and {@code prefix}-cert.pem signed by CA {@code ca}. */
    private static void leaf(Path root, String ca, Path prefix, String cn, String section, Path ext)
            throws IOException, InterruptedException {
        Path csr = root.resolve(prefix.getFileName() + "-" + ca + ".csr");
        ExternalTools.ok("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", prefix + "-key.pem",
                "-out", csr.toString(), "-subj", "/CN=" + cn);
        ExternalTools.ok("openssl", "x509", "-req", "-in", csr.toString(), "-CA", root.resolve(ca + "-cert.pem").toString(),
                "-CAkey", root.resolve(ca + "-key.pem").toString(), "-CAcreateserial", "-out", prefix + "-cert.pem",
                "-days", "30", "-extfile", ext.toString(), "-extensions", section);
    }
}
