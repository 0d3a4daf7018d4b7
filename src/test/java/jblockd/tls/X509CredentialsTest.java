package jblockd.tls;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.TestCertificates;
import jblockd.tls.X509Credentials.Endpoint;

/** Loading QEMU's credential directories: file names, key formats, the sanity checks. */
class X509CredentialsTest {
    @TempDir
    Path dir;

    private TestCertificates pki;

    @BeforeEach
    void pki() throws Exception {
        pki = TestCertificates.create(dir.resolve("pki"));
    }

    private Path copy(Path from) throws Exception {
        Path to = Files.createDirectories(dir.resolve("copy" + System.nanoTime()));
        try (var files = Files.list(from)) {
            for (Path f : (Iterable<Path>) files::iterator) {
                Files.copy(f, to.resolve(f.getFileName()));
            }
        }
        return to;
    }

    @Test
    void serverAndClientDirectoriesLoad() throws Exception {
        X509Credentials s = X509Credentials.load(pki.server(), Endpoint.SERVER, true, true);
        assertThat(s.endpoint()).isEqualTo(Endpoint.SERVER);
        assertThat(s.serverEngine().getNeedClientAuth()).isTrue();
        assertThat(X509Credentials.load(pki.server(), Endpoint.SERVER, false, true).serverEngine().getNeedClientAuth())
                .isFalse();
        // a client needs only the CA
        assertThat(X509Credentials.load(pki.clientWithoutCertificate(), Endpoint.CLIENT, true, true).endpoint())
                .isEqualTo(Endpoint.CLIENT);
    }

    @Test
    void missingFilesGetQemusText() throws Exception {
        assertThatThrownBy(() -> X509Credentials.load(dir.resolve("nodir"), Endpoint.SERVER, true, true))
                .hasMessage("Unable to access credentials " + dir.resolve("nodir/ca-cert.pem")
                        + ": No such file or directory");
        assertThatThrownBy(() -> X509Credentials.load(pki.client(), Endpoint.SERVER, true, true))
                .hasMessage("Unable to access credentials " + pki.client().resolve("server-cert.pem")
                        + ": No such file or directory");
    }

    @Test
    void pkcs1RsaKeysAreRead() throws Exception {
        Path d = copy(pki.server());
        Path key = d.resolve("server-key.pem");
        ExternalTools.ok("openssl", "rsa", "-in", key.toString(), "-traditional", "-out", key + ".1");
        Files.move(Path.of(key + ".1"), key, StandardCopyOption.REPLACE_EXISTING);
        assertThat(Files.readString(key)).startsWith("-----BEGIN RSA PRIVATE KEY-----");
        assertThat(X509Credentials.load(d, Endpoint.SERVER, true, true).dir()).isEqualTo(d);
    }

    @Test
    void encryptedKeysAreRefusedWithAHint() throws Exception {
        Path d = copy(pki.server());
        Path key = d.resolve("server-key.pem");
        ExternalTools.ok("openssl", "pkcs8", "-topk8", "-in", key.toString(), "-out", key + ".enc",
                "-passout", "pass:secret");
        Files.move(Path.of(key + ".enc"), key, StandardCopyOption.REPLACE_EXISTING);
        assertThatThrownBy(() -> X509Credentials.load(d, Endpoint.SERVER, true, true))
                .hasMessageContaining("encrypted private keys are not supported");
    }

    @Test
    void aKeyOfAnotherCertificateIsRefused() throws Exception {
        Path d = copy(pki.server());
        Files.copy(pki.client().resolve("client-key.pem"), d.resolve("server-key.pem"),
                StandardCopyOption.REPLACE_EXISTING);
        assertThatThrownBy(() -> X509Credentials.load(d, Endpoint.SERVER, true, true))
                .hasMessage("The private key " + d.resolve("server-key.pem") + " does not match the certificate "
                        + d.resolve("server-cert.pem"));
    }

    @Test
    void sanityChecksCaConstraintsAndSignature() throws Exception {
        Path notCa = copy(pki.server());
        Files.copy(notCa.resolve("server-cert.pem"), notCa.resolve("ca-cert.pem"), StandardCopyOption.REPLACE_EXISTING);
        assertThatThrownBy(() -> X509Credentials.load(notCa, Endpoint.SERVER, true, true))
                .hasMessage("The certificate " + notCa.resolve("ca-cert.pem") + " basic constraints do not show a CA");
        Path otherCa = copy(pki.server());
        Files.copy(pki.clientOfOtherCa().resolve("ca-cert.pem"), otherCa.resolve("ca-cert.pem"),
                StandardCopyOption.REPLACE_EXISTING);
        assertThatThrownBy(() -> X509Credentials.load(otherCa, Endpoint.SERVER, true, true))
                .hasMessage("The certificate " + otherCa.resolve("server-cert.pem") + " is not signed by the CA in "
                        + otherCa.resolve("ca-cert.pem"));
        // sanity-check=off loads it anyway (peers will still fail verification)
        assertThat(X509Credentials.load(otherCa, Endpoint.SERVER, true, false).endpoint()).isEqualTo(Endpoint.SERVER);
    }

    @Test
    void revocationListsAreRefusedNotIgnored() throws Exception {
        Path d = copy(pki.server());
        Files.writeString(d.resolve("ca-crl.pem"), "");
        assertThatThrownBy(() -> X509Credentials.load(d, Endpoint.SERVER, true, true))
                .hasMessageContaining("does not check certificate revocation lists");
    }
}
