package jblockd.block;

import jblockd.tls.X509Credentials;

/**
 * Where a node finds the objects its options name (the daemon's object registry): a remote
 * node's {@code tls-creds}, client-endpoint credentials retained while the node uses them, so
 * the object cannot be deleted under it; an rbd node's {@code key-secret}, read once at open.
 */
public interface ObjectLookup {
    /** The client credentials {@code id}; QEMU's texts for an unknown id or a server endpoint. */
    X509Credentials retainClient(String id) throws IoError;

    /** Ends a use taken by {@link #retainClient}. */
    void release(String id);

    /** The bytes of the secret {@code id}; QEMU's texts for an unknown id or another type. */
    byte[] secret(String id) throws IoError;

    /** No objects at all (a graph without a daemon): every id is unknown. */
    ObjectLookup NONE = new ObjectLookup() {
        public X509Credentials retainClient(String id) throws IoError {
            throw new IoError(Errno.EINVAL, "No TLS credentials with id '" + id + "'");
        }

        public void release(String id) {
        }

        public byte[] secret(String id) throws IoError {
            throw new IoError(Errno.EINVAL, "No secret with id '" + id + "'");
        }
    };
}
