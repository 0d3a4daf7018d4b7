package jblockd.tls;

import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.KeyFactory;
import java.security.PrivateKey;
import java.security.cert.CertificateException;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The PEM files of QEMU's credential directories (crypto/tlscredsx509.c): X.509 certificates
 * (the JDK's {@link CertificateFactory} reads PEM itself) and private keys, unencrypted PKCS#8
 * ({@code BEGIN PRIVATE KEY}, openssl 3's default) or PKCS#1 RSA ({@code BEGIN RSA PRIVATE KEY},
 * older openssl's), which is wrapped into PKCS#8 here. Encrypted keys and SEC1 EC keys are
 * refused with a text that says how to convert them. Errors are {@link TlsConfigException}s
 * whose message names the file.
 */
public final class Pem {
    private Pem() {
    }

    private static final Pattern BLOCK = Pattern.compile(
            "-----BEGIN ([A-Z0-9 ]+)-----([A-Za-z0-9+/=\\s]*?)-----END \\1-----");

    /** The file's bytes; a missing file gets QEMU's "Unable to access credentials" text. */
    static byte[] read(Path file) throws TlsConfigException {
        try {
            return Files.readAllBytes(file);
        } catch (NoSuchFileException e) {
            throw new TlsConfigException("Unable to access credentials " + file + ": No such file or directory");
        } catch (IOException e) {
            throw new TlsConfigException("Unable to access credentials " + file + ": " + e.getMessage());
        }
    }

    /** Every certificate in the file, in order; at least one. */
    public static List<X509Certificate> certificates(Path file) throws TlsConfigException {
        byte[] bytes = read(file);
        try {
            List<X509Certificate> out = new ArrayList<>();
            for (var c : CertificateFactory.getInstance("X.509").generateCertificates(new ByteArrayInputStream(bytes))) {
                out.add((X509Certificate) c);
            }
            if (out.isEmpty()) {
                throw new TlsConfigException("Unable to import certificate " + file + ": no certificate in the file");
            }
            return out;
        } catch (CertificateException e) {
            throw new TlsConfigException("Unable to import certificate " + file + ": " + e.getMessage());
        }
    }

    /** The one private key of the file. */
    public static PrivateKey privateKey(Path file) throws TlsConfigException {
        String text = new String(read(file), StandardCharsets.US_ASCII);
        Matcher m = BLOCK.matcher(text);
        while (m.find()) {
            String label = m.group(1);
            byte[] der;
            try {
                der = Base64.getMimeDecoder().decode(m.group(2));
            } catch (IllegalArgumentException e) {
                throw new TlsConfigException("Unable to load private key " + file + ": bad base64: " + e.getMessage());
            }
            switch (label) {
                case "PRIVATE KEY" -> {
                    return pkcs8(file, der);
                }
                case "RSA PRIVATE KEY" -> {
                    return pkcs8(file, rsaPkcs1ToPkcs8(der));
                }
                case "ENCRYPTED PRIVATE KEY" -> throw new TlsConfigException("Unable to load private key " + file
                        + ": encrypted private keys are not supported by jblockd (passwordid); decrypt it with"
                        + " 'openssl pkcs8 -in KEY -out KEY.pem'");
                case "EC PRIVATE KEY" -> throw new TlsConfigException("Unable to load private key " + file
                        + ": SEC1 EC keys are not supported by jblockd; convert it to PKCS#8 with"
                        + " 'openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pem'");
                default -> {
                    // another block (parameters, a certificate): look further
                }
            }
        }
        throw new TlsConfigException("Unable to load private key " + file + ": no PEM private key in the file");
    }

    private static PrivateKey pkcs8(Path file, byte[] der) throws TlsConfigException {
        PKCS8EncodedKeySpec spec = new PKCS8EncodedKeySpec(der);
        // the algorithm is inside the structure; the JDK only decodes it with a matching factory
        for (String alg : List.of("RSA", "EC", "Ed25519", "Ed448", "RSASSA-PSS")) {
            try {
                return KeyFactory.getInstance(alg).generatePrivate(spec);
            } catch (GeneralSecurityException e) {
                // try the next algorithm
            }
        }
        throw new TlsConfigException("Unable to load private key " + file
                + ": not a PKCS#8 RSA, EC or EdDSA private key");
    }

    /**
     * PKCS#1 RSAPrivateKey wrapped as PKCS#8 PrivateKeyInfo (RFC 5208):
     * {@code SEQUENCE { INTEGER 0, SEQUENCE { OID rsaEncryption, NULL }, OCTET STRING { der } }}.
     */
    static byte[] rsaPkcs1ToPkcs8(byte[] pkcs1) {
        byte[] version = {0x02, 0x01, 0x00};
        byte[] algorithm = {0x30, 0x0d, 0x06, 0x09, 0x2a, (byte) 0x86, 0x48, (byte) 0x86, (byte) 0xf7, 0x0d, 0x01,
            0x01, 0x01, 0x05, 0x00};
        byte[] octets = tlv(0x04, pkcs1);
        byte[] body = new byte[version.length + algorithm.length + octets.length];
        System.arraycopy(version, 0, body, 0, version.length);
        System.arraycopy(algorithm, 0, body, version.length, algorithm.length);
        System.arraycopy(octets, 0, body, version.length + algorithm.length, octets.length);
        return tlv(0x30, body);
    }

    /** A DER tag-length-value with a definite length. */
    private static byte[] tlv(int tag, byte[] value) {
        int n = value.length;
        byte[] len;
        if (n < 0x80) {
            len = new byte[] {(byte) n};
        } else if (n < 0x100) {
            len = new byte[] {(byte) 0x81, (byte) n};
        } else if (n < 0x10000) {
            len = new byte[] {(byte) 0x82, (byte) (n >> 8), (byte) n};
        } else {
            len = new byte[] {(byte) 0x83, (byte) (n >> 16), (byte) (n >> 8), (byte) n};
        }
        byte[] out = new byte[1 + len.length + n];
        out[0] = (byte) tag;
        System.arraycopy(len, 0, out, 1, len.length);
        System.arraycopy(value, 0, out, 1 + len.length, n);
        return out;
    }
}
