package jblockd.tls;

import javax.net.ssl.SSLPeerUnverifiedException;

/**
 * What a TLS-only server needs: its server-endpoint credentials and, when {@code tls-authz} is
 * set, the check of the client's identity ({@link PeerName}) after each handshake.
 */
public record ServerTls(X509Credentials credentials, PeerCheck authz) {

    /** Who may connect; throws with the reason (QEMU's text) when {@code peerName} may not. */
    @FunctionalInterface
    public interface PeerCheck {
        void check(String peerName) throws SSLPeerUnverifiedException;
    }

    public static ServerTls withoutAuthz(X509Credentials credentials) {
        return new ServerTls(credentials, null);
    }
}
