package jblockd.tls;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.ExternalTools;

class PeerNameTest {
    @TempDir
    Path dir;

    /** QEMU 7.2 logged "TLS x509 authz check for C=GB,O=Acme Ltd,CN=client is denied" for this subject. */
    @Test
    void namesTheSubjectInCertificateOrderAsGnutlsDoes() throws Exception {
        ExternalTools.assumeTools("openssl");
        Path cert = dir.resolve("c.pem");
        ExternalTools.ok("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                dir.resolve("k.pem").toString(), "-out", cert.toString(), "-days", "1",
                "-subj", "/C=GB/O=Acme Ltd, Inc/CN=client");
        X509Certificate c;
        try (InputStream in = Files.newInputStream(cert)) {
            c = (X509Certificate) CertificateFactory.getInstance("X.509").generateCertificate(in);
        }
        assertThat(PeerName.of(c)).isEqualTo("C=GB,O=Acme Ltd\\, Inc,CN=client");
    }
}
