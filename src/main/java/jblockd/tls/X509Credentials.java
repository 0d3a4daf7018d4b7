package jblockd.tls;

import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.PublicKey;
import java.security.Signature;
import java.security.cert.CertificateExpiredException;
import java.security.cert.CertificateNotYetValidException;
import java.security.cert.X509Certificate;
import java.security.interfaces.RSAPrivateCrtKey;
import java.security.interfaces.RSAPublicKey;
import java.util.List;

import javax.net.ssl.KeyManager;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.TrustManager;
import javax.net.ssl.TrustManagerFactory;

/**
 * A {@code tls-creds-x509} object's credentials, loaded at creation into a JDK
 * {@link SSLContext} (crypto/tlscredsx509.c's file names and rules):
 * <ul>
 *   <li>server: {@code ca-cert.pem}, {@code server-cert.pem}, {@code server-key.pem}, all
 *   required; {@code verifyPeer} (QEMU's default true) requires a client certificate signed by
 *   the CA;</li>
 *   <li>client: {@code ca-cert.pem} required, {@code client-cert.pem}/{@code client-key.pem}
 *   optional (a pair or neither); {@code verifyPeer} checks the server's certificate against
 *   the CA and the host name.</li>
 * </ul>
 * {@code ca-crl.pem} is refused (jblockd does not check revocation lists yet, and silently not
 * checking one would be worse). {@code dh-params.pem} is not read: the JDK uses its own
 * finite-field groups (RFC 7919), which does not weaken anything.
 * {@code sanityCheck} (QEMU's default true) checks at load what QEMU's
 * qcrypto_tls_creds_x509_sanity_check does: validity times, CA basic constraints, each
 * certificate signed by the CA. Immutable and thread-safe; each engine is new.
 */
public final class X509Credentials {
    /** QCryptoTLSCredsEndpoint. */
    public enum Endpoint {
        SERVER, CLIENT;

        public String wire() {
            return name().toLowerCase(java.util.Locale.ROOT);
        }
    }

    private final Path dir;
    private final Endpoint endpoint;
    private final boolean verifyPeer;
    private final SSLContext context;

    private X509Credentials(Path dir, Endpoint endpoint, boolean verifyPeer, SSLContext context) {
        this.dir = dir;
        this.endpoint = endpoint;
        this.verifyPeer = verifyPeer;
        this.context = context;
    }

    public Path dir() {
        return dir;
    }

    public Endpoint endpoint() {
        return endpoint;
    }

    public boolean verifyPeer() {
        return verifyPeer;
    }

    /** The loaded context (for clients that build their own engines). */
    public SSLContext context() {
        return context;
    }

    /** Loads the directory's files for {@code endpoint}, in QEMU's order (the CA first). */
    public static X509Credentials load(Path dir, Endpoint endpoint, boolean verifyPeer, boolean sanityCheck)
            throws TlsConfigException {
        Path caFile = dir.resolve("ca-cert.pem");
        List<X509Certificate> cas = Pem.certificates(caFile);
        Path crl = dir.resolve("ca-crl.pem");
        if (Files.exists(crl)) {
            throw new TlsConfigException("Unable to use " + crl
                    + ": jblockd does not check certificate revocation lists yet");
        }
        String side = endpoint.wire();
        Path certFile = dir.resolve(side + "-cert.pem");
        Path keyFile = dir.resolve(side + "-key.pem");
        List<X509Certificate> chain = null;
        PrivateKey key = null;
        boolean required = endpoint == Endpoint.SERVER;
        if (required || Files.exists(certFile) || Files.exists(keyFile)) {
            chain = Pem.certificates(certFile);
            key = Pem.privateKey(keyFile);
            checkKeyMatches(chain.getFirst(), key, keyFile, certFile);
        }
        if (sanityCheck) {
            for (X509Certificate ca : cas) {
                checkTimes(ca, caFile);
                if (ca.getBasicConstraints() < 0) {
                    throw new TlsConfigException("The certificate " + caFile + " basic constraints do not show a CA");
                }
            }
            if (chain != null) {
                X509Certificate leaf = chain.getFirst();
                checkTimes(leaf, certFile);
                if (leaf.getBasicConstraints() >= 0) {
                    throw new TlsConfigException("The certificate " + certFile
                            + " basic constraints show a CA, but we need one for a " + side);
                }
                checkSignedByCa(chain, cas, certFile, caFile);
            }
        }
        try {
            KeyManager[] kms = null;
            if (chain != null) {
                KeyStore ks = KeyStore.getInstance("PKCS12");
                ks.load(null, null);
                char[] pw = new char[0];
                ks.setKeyEntry("key", key, pw, chain.toArray(new X509Certificate[0]));
                KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
                kmf.init(ks, pw);
                kms = kmf.getKeyManagers();
            }
            TrustManager[] tms;
            if (verifyPeer) {
                KeyStore ts = KeyStore.getInstance("PKCS12");
                ts.load(null, null);
                for (int i = 0; i < cas.size(); i++) {
                    ts.setCertificateEntry("ca" + i, cas.get(i));
                }
                TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
                tmf.init(ts);
                tms = new TrustManager[] {endpoint == Endpoint.SERVER
                        ? new NoIssuerList((javax.net.ssl.X509ExtendedTrustManager) tmf.getTrustManagers()[0])
                        : tmf.getTrustManagers()[0]};
            } else {
                // verify-peer=off: QEMU accepts any peer certificate (or none)
                tms = new TrustManager[] {new AcceptingTrustManager()};
            }
            SSLContext ctx = SSLContext.getInstance("TLS");
            ctx.init(kms, tms, null);
            return new X509Credentials(dir, endpoint, verifyPeer, ctx);
        } catch (GeneralSecurityException | java.io.IOException e) {
            throw new TlsConfigException("Unable to load TLS credentials from " + dir + ": " + e.getMessage());
        }
    }

    /** A server-side engine: a client certificate is required when verify-peer is on. */
    public SSLEngine serverEngine() {
        SSLEngine e = context.createSSLEngine();
        e.setUseClientMode(false);
        e.setNeedClientAuth(verifyPeer);
        return e;
    }

    /**
     * A client-side engine checking the server's certificate against {@code hostname} (a DNS
     * name or an IP literal, matched with the certificate's subjectAltName as HTTPS does) when
     * verify-peer is on.
     */
    public SSLEngine clientEngine(String hostname, int port) {
        SSLEngine e = context.createSSLEngine(hostname, port);
        e.setUseClientMode(true);
        if (verifyPeer) {
            SSLParameters p = e.getSSLParameters();
            p.setEndpointIdentificationAlgorithm("HTTPS");
            e.setSSLParameters(p);
        }
        return e;
    }

    private static void checkTimes(X509Certificate c, Path file) throws TlsConfigException {
        try {
            c.checkValidity();
        } catch (CertificateExpiredException e) {
            throw new TlsConfigException("The certificate " + file + " has expired");
        } catch (CertificateNotYetValidException e) {
            throw new TlsConfigException("The certificate " + file + " is not yet active");
        }
    }

    private static void checkSignedByCa(List<X509Certificate> chain, List<X509Certificate> cas, Path certFile,
                                        Path caFile) throws TlsConfigException {
        // the last certificate of the file's chain must be issued by one of the CAs
        X509Certificate top = chain.getLast();
        for (X509Certificate ca : cas) {
            try {
                top.verify(ca.getPublicKey());
                return;
            } catch (GeneralSecurityException e) {
                // not this CA
            }
        }
        throw new TlsConfigException("The certificate " + certFile + " is not signed by the CA in " + caFile);
    }

    /** The key must belong to the certificate (gnutls refuses the pair at load otherwise). */
    private static void checkKeyMatches(X509Certificate cert, PrivateKey key, Path keyFile, Path certFile)
            throws TlsConfigException {
        PublicKey pub = cert.getPublicKey();
        boolean match;
        if (key instanceof RSAPrivateCrtKey rk && pub instanceof RSAPublicKey rp) {
            match = rk.getModulus().equals(rp.getModulus()) && rk.getPublicExponent().equals(rp.getPublicExponent());
        } else {
            match = signsFor(key, pub);
        }
        if (!match) {
            throw new TlsConfigException("The private key " + keyFile + " does not match the certificate " + certFile);
        }
    }

    private static boolean signsFor(PrivateKey key, PublicKey pub) {
        String alg = switch (key.getAlgorithm()) {
            case "EC" -> "SHA256withECDSA";
            case "Ed25519", "Ed448", "EdDSA" -> key.getAlgorithm();
            case "RSASSA-PSS" -> "RSASSA-PSS";
            default -> "SHA256with" + key.getAlgorithm();
        };
        try {
            byte[] probe = "jblockd key check".getBytes(java.nio.charset.StandardCharsets.US_ASCII);
            Signature s = Signature.getInstance(alg);
            if (alg.equals("RSASSA-PSS")) {
                s.setParameter(new java.security.spec.PSSParameterSpec("SHA-256", "MGF1",
                        java.security.spec.MGF1ParameterSpec.SHA256, 32, 1));
            }
            s.initSign(key);
            s.update(probe);
            byte[] sig = s.sign();
            Signature v = Signature.getInstance(alg);
            if (alg.equals("RSASSA-PSS")) {
                v.setParameter(new java.security.spec.PSSParameterSpec("SHA-256", "MGF1",
                        java.security.spec.MGF1ParameterSpec.SHA256, 32, 1));
            }
            v.initVerify(pub);
            v.update(probe);
            return v.verify(sig);
        } catch (GeneralSecurityException e) {
            return false;
        }
    }

    /**
     * The CA's trust manager, announcing no accepted issuers: the JDK then sends no
     * certificate_authorities in its TLS 1.3 CertificateRequest, and GnuTLS clients (QEMU,
     * libnbd 1.14) send their certificate. With the list (CN of the very CA that signed the
     * client certificate) they sent an empty Certificate message to a TLS 1.3 JDK server
     * (observed with nbdinfo; the same certificates work against qemu-storage-daemon and over
     * TLS 1.2). The client certificate is still verified against the CA.
     */
    private static final class NoIssuerList extends javax.net.ssl.X509ExtendedTrustManager {
        private final javax.net.ssl.X509ExtendedTrustManager d;

        NoIssuerList(javax.net.ssl.X509ExtendedTrustManager d) {
            this.d = d;
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType) throws java.security.cert.CertificateException {
            d.checkClientTrusted(chain, authType);
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType) throws java.security.cert.CertificateException {
            d.checkServerTrusted(chain, authType);
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType, java.net.Socket s) throws java.security.cert.CertificateException {
            d.checkClientTrusted(chain, authType, s);
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType, java.net.Socket s) throws java.security.cert.CertificateException {
            d.checkServerTrusted(chain, authType, s);
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType, SSLEngine e) throws java.security.cert.CertificateException {
            d.checkClientTrusted(chain, authType, e);
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType, SSLEngine e) throws java.security.cert.CertificateException {
            d.checkServerTrusted(chain, authType, e);
        }

        @Override
        public X509Certificate[] getAcceptedIssuers() {
            return new X509Certificate[0];
        }
    }

    /** verify-peer=off: every peer is accepted, as QEMU skips gnutls' verification then. */
    private static final class AcceptingTrustManager extends javax.net.ssl.X509ExtendedTrustManager {
        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType) {
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType) {
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType, java.net.Socket s) {
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType, java.net.Socket s) {
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType, SSLEngine e) {
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType, SSLEngine e) {
        }

        @Override
        public X509Certificate[] getAcceptedIssuers() {
            return new X509Certificate[0];
        }
    }
}
