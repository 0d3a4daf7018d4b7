package jblockd.object;

import jblockd.tls.X509Credentials;

/** A {@code tls-creds-x509} object: its loaded credentials. */
public record TlsCredsX509(String id, X509Credentials credentials) implements UserObject {
    @Override
    public String qomType() {
        return "tls-creds-x509";
    }
}
