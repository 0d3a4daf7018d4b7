package jblockd.tls;

import java.security.cert.X509Certificate;
import java.util.List;
import java.util.stream.Collectors;

import javax.naming.InvalidNameException;
import javax.naming.ldap.LdapName;
import javax.naming.ldap.Rdn;
import javax.security.auth.x500.X500Principal;

/**
 * The identity QEMU checks against {@code tls-authz}: the peer certificate's subject as GnuTLS'
 * {@code gnutls_x509_crt_get_dn} prints it, the RDNs in the certificate's own order (an
 * openssl {@code -subj "/C=GB/O=Acme Ltd/CN=client"} is {@code C=GB,O=Acme Ltd,CN=client}, seen
 * in QEMU 7.2's "TLS x509 authz check for ... is denied"). RFC 2253, which the JDK prints,
 * has the reverse order.
 */
public final class PeerName {
    private PeerName() {
    }

    public static String of(X509Certificate cert) {
        String rfc2253 = cert.getSubjectX500Principal().getName(X500Principal.RFC2253);
        try {
            // LdapName lists the RDNs rightmost first, i.e. in the certificate's order
            List<Rdn> rdns = new LdapName(rfc2253).getRdns();
            return rdns.stream().map(Rdn::toString).collect(Collectors.joining(","));
        } catch (InvalidNameException e) {
            throw new IllegalStateException("the JDK's own RFC 2253 name does not parse: " + rfc2253, e);
        }
    }
}
