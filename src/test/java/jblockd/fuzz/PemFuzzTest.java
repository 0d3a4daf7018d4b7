package jblockd.fuzz;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.io.TempDir;

import com.code_intelligence.jazzer.junit.FuzzTest;

import jblockd.tls.Pem;
import jblockd.tls.TlsConfigException;

/**
 * The PEM parser of the TLS credential directories ({@link Pem}): any file content yields
 * certificates, a key, or a {@link TlsConfigException} whose message names the file; never
 * another exception, a hang or a huge allocation. Seeds: certificates and keys made by openssl
 * (RSA PKCS#1 and PKCS#8, EC, Ed25519, a chain), in PemFuzzTestInputs.
 */
class PemFuzzTest {
    @TempDir
    Path dir;

    @FuzzTest
    void certificatesAndKeys(byte[] input) throws Exception {
        Path file = dir.resolve("creds.pem");
        Files.write(file, input);
        FuzzChecks.bounded(input.length, () -> {
            try {
                assertThat(Pem.certificates(file)).isNotEmpty();
            } catch (TlsConfigException e) {
                assertThat(e.getMessage()).contains(file.toString());
            }
            try {
                assertThat(Pem.privateKey(file)).isNotNull();
            } catch (TlsConfigException e) {
                assertThat(e.getMessage()).contains(file.toString());
            }
        });
    }
}
