package jblockd.object;

/**
 * An authorization object (QEMU's QAuthZ subclasses, authz/*.c): answers whether an identity
 * (for TLS, the client certificate's distinguished name, see {@link jblockd.tls.PeerName}) is
 * allowed. Immutable once made.
 */
public sealed interface Authz extends UserObject permits AuthzSimple, AuthzList {
    boolean allows(String identity);
}
