package jblockd.object;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import javax.net.ssl.SSLPeerUnverifiedException;

import jblockd.qapi.QmpError;
import jblockd.tls.X509Credentials;

/**
 * The daemon's user-created objects by id (QEMU's {@code /objects} container), with QEMU's
 * lookup texts (crypto/secret_common.c qcrypto_secret_lookup, nbd/server.c and block/nbd.c
 * nbd_get_tls_creds). A user of an object (the NBD server, a node) holds it with
 * {@link #retain}/{@link #release}, and a held object cannot be deleted. One per daemon;
 * thread-safe.
 */
public final class ObjectRegistry {
    private final Map<String, UserObject> objects = new LinkedHashMap<>();
    private final Map<String, Integer> uses = new HashMap<>();

    /** Adds {@code o}; an id already taken is QEMU's object_property_try_add_child text. */
    public synchronized void add(UserObject o) throws QmpError {
        if (objects.containsKey(o.id())) {
            throw QmpError.generic("attempt to add duplicate property '" + o.id() + "' to object (type 'container')");
        }
        objects.put(o.id(), o);
    }

    /** object-del: refused while in use (QEMU's user_creatable_del text). */
    public synchronized void delete(String id) throws QmpError {
        UserObject o = objects.get(id);
        if (o == null) {
            throw QmpError.generic("object '" + id + "' not found");
        }
        if (uses.getOrDefault(id, 0) > 0) {
            throw QmpError.generic("object '" + id + "' is in use, can not be deleted");
        }
        objects.remove(id);
        if (o instanceof Secret s) {
            s.wipe();
        }
    }

    public synchronized List<UserObject> list() {
        return new ArrayList<>(objects.values());
    }

    /** The secret {@code id} (not retained: its value is read once, at open). */
    public synchronized Secret secret(String id) throws QmpError {
        UserObject o = objects.get(id);
        if (o == null) {
            throw QmpError.generic("No secret with id '" + id + "'");
        }
        if (!(o instanceof Secret s)) {
            throw QmpError.generic("Object with id '" + id + "' is not a secret");
        }
        return s;
    }

    /**
     * The TLS credentials {@code id} for {@code endpoint}, retained: the caller
     * {@link #release}s them when it stops using them.
     */
    public synchronized X509Credentials retainTlsCreds(String id, X509Credentials.Endpoint endpoint)
            throws QmpError {
        UserObject o = objects.get(id);
        if (o == null) {
            throw QmpError.generic("No TLS credentials with id '" + id + "'");
        }
        if (!(o instanceof TlsCredsX509 t)) {
            throw QmpError.generic("Object with id '" + id + "' is not TLS credentials");
        }
        if (t.credentials().endpoint() != endpoint) {
            throw QmpError.generic("Expected TLS credentials for a " + endpoint.wire() + " endpoint");
        }
        uses.merge(id, 1, Integer::sum);
        return t.credentials();
    }

    /**
     * Whether the authorization object {@code authzId} allows {@code identity}, looked up at each
     * check as QEMU does (authz/base.c qauthz_is_allowed_by_id): an object added or deleted
     * while a server runs counts from its next client. Throws with QEMU's texts when the object
     * is missing, of another type, or says no.
     */
    public void authorize(String authzId, String identity) throws SSLPeerUnverifiedException {
        UserObject o;
        synchronized (this) {
            o = objects.get(authzId);
        }
        if (o == null) {
            throw new SSLPeerUnverifiedException("Cannot find QAuthZ object ID " + authzId);
        }
        if (!(o instanceof Authz a)) {
            throw new SSLPeerUnverifiedException("Object '" + authzId + "' is not a QAuthZ subclass");
        }
        if (!a.allows(identity)) {
            throw new SSLPeerUnverifiedException("TLS x509 authz check for " + identity + " is denied");
        }
    }

    /** Ends one use of {@code id} taken by a retain method. */
    public synchronized void release(String id) {
        uses.computeIfPresent(id, (k, n) -> n <= 1 ? null : n - 1);
    }
}
