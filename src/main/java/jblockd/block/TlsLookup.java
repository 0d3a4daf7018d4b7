package jblockd.block;

import jblockd.tls.X509Credentials;

/**
 * Where a node's {@code tls-creds} id is found (the daemon's object registry): client-endpoint
 * credentials, retained while the node uses them, so the object cannot be deleted under it.
 */
public interface TlsLookup {
    /** The client credentials {@code id}; QEMU's texts for an unknown id or a server endpoint. */
    X509Credentials retainClient(String id) throws IoError;

    /** Ends a use taken by {@link #retainClient}. */
    void release(String id);

    /** No objects at all (a graph without a daemon): every id is unknown. */
    TlsLookup NONE = new TlsLookup() {
        public X509Credentials retainClient(String id) throws IoError {
            throw new IoError(Errno.EINVAL, "No TLS credentials with id '" + id + "'");
        }

        public void release(String id) {
        }
    };
}
