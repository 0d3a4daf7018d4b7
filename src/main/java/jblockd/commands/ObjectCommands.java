package jblockd.commands;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import jblockd.object.AuthzList;
import jblockd.object.AuthzSimple;
import jblockd.object.ObjectRegistry;
import jblockd.object.Secret;
import jblockd.object.TlsCredsX509;
import jblockd.object.UserObject;
import jblockd.qapi.QmpError;
import jblockd.qmp.CommandGroup;
import jblockd.qmp.CommandRegistry;
import jblockd.tls.TlsConfigException;
import jblockd.tls.X509Credentials;

/**
 * qom.json: object-add, object-del (qom/object_interfaces.c) and jblockd's query-objects, over
 * the daemon's {@link ObjectRegistry}. The schema has already checked the members of each
 * {@code qom-type} (unknown types and properties get QEMU's texts there); this checks the values
 * in QEMU's order (crypto/secret_common.c, crypto/tlscredsx509.c) and loads the object, so a
 * bad object is refused at object-add, as in QEMU, and nothing is added.
 */
public final class ObjectCommands implements CommandGroup {

    public record ObjectDel(String id) {
    }

    /** query-objects entry (jblockd's; QEMU 7.2 has only qom-list /objects). */
    public record ObjectInfo(String id, String qomType) {
    }

    private final ObjectRegistry objects;

    public ObjectCommands(ObjectRegistry objects) {
        this.objects = objects;
    }

    @Override
    public void register(CommandRegistry r) {
        r.register("object-add", ObjectNode.class, this::objectAdd);
        r.register("object-del", ObjectDel.class, a -> {
            objects.delete(a.id());
            return null;
        });
        r.register("query-objects", Void.class, a -> queryObjects());
    }

    private List<ObjectInfo> queryObjects() {
        List<ObjectInfo> out = new ArrayList<>();
        for (UserObject o : objects.list()) {
            out.add(new ObjectInfo(o.id(), o.qomType()));
        }
        return out;
    }

    Object objectAdd(ObjectNode a) throws QmpError {
        String type = a.path("qom-type").asText();
        String id = a.path("id").asText();
        if (!BlockdevOptionsCodec.wellFormed(id)) {
            throw QmpError.generic("Parameter 'id' expects an identifier");
        }
        if (a.has("loaded")) {
            // deprecated in 7.2 and read-only after creation: QEMU refuses setting it
            throw QmpError.generic("Property '" + type + ".loaded' is not writable");
        }
        UserObject o = switch (type) {
            case "secret" -> secret(id, a);
            case "tls-creds-x509" -> x509(id, a);
            case "authz-simple" -> new AuthzSimple(id, a.path("identity").asText());
            case "authz-list" -> authzList(id, a);
            case "tls-creds-psk" -> throw QmpError.generic("jblockd does not support 'tls-creds-psk' objects: the"
                    + " JDK's TLS has no pre-shared-key cipher suites; use tls-creds-x509");
            case "tls-creds-anon" -> throw QmpError.generic("jblockd does not support 'tls-creds-anon' objects:"
                    + " the JDK's TLS has no anonymous cipher suites enabled, and they authenticate nobody;"
                    + " use tls-creds-x509");
            default -> throw QmpError.generic("jblockd does not support '" + type
                    + "' objects yet (secret, tls-creds-x509, authz-simple and authz-list are supported)");
        };
        objects.add(o);
        return null;
    }

    /** authz/list.c: rules in order, the first match decides; {@code policy} (default deny) otherwise. */
    private static AuthzList authzList(String id, ObjectNode a) {
        List<AuthzList.Rule> rules = new ArrayList<>();
        for (JsonNode r : a.path("rules")) {
            rules.add(new AuthzList.Rule(r.path("match").asText(), "allow".equals(r.path("policy").asText()),
                    "glob".equals(r.path("format").asText())));
        }
        return new AuthzList(id, "allow".equals(text(a, "policy")), rules);
    }

    /** crypto/secret_common.c qcrypto_secret_complete: data xor file, then the format. */
    private static Secret secret(String id, ObjectNode a) throws QmpError {
        String data = text(a, "data");
        String file = text(a, "file");
        if (data != null && file != null) {
            throw QmpError.generic("'file' and 'data' are mutually exclusive");
        }
        if (data == null && file == null) {
            throw QmpError.generic("Either 'file' or 'data' must be provided");
        }
        if (a.has("keyid") || a.has("iv")) {
            throw QmpError.generic("jblockd does not support encrypted secrets (keyid, iv): give the plain value"
                    + " in 'data' or 'file'");
        }
        byte[] raw;
        if (data != null) {
            raw = data.getBytes(java.nio.charset.StandardCharsets.UTF_8);
        } else {
            try {
                raw = Files.readAllBytes(Path.of(file));
            } catch (NoSuchFileException e) {
                throw QmpError.generic("Unable to read " + file + ": Failed to open file \u201C" + file
                        + "\u201D: No such file or directory");
            } catch (IOException e) {
                throw QmpError.generic("Unable to read " + file + ": " + e.getMessage());
            }
        }
        if ("base64".equals(text(a, "format"))) {
            raw = base64(raw);
        }
        return new Secret(id, raw);
    }

    /** util/base64.c qbase64_decode: only the alphabet, '=' padding only at the end. */
    private static byte[] base64(byte[] in) throws QmpError {
        int end = in.length;
        while (end > 0 && in[end - 1] == '=') {
            end--;
        }
        for (int i = 0; i < end; i++) {
            byte c = in[i];
            boolean ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+'
                    || c == '/';
            if (!ok) {
                throw QmpError.generic("Base64 data contains invalid characters");
            }
        }
        try {
            return Base64.getDecoder().decode(new String(in, 0, end, java.nio.charset.StandardCharsets.US_ASCII));
        } catch (IllegalArgumentException e) {
            throw QmpError.generic("Base64 data is not valid: " + e.getMessage());
        }
    }

    /** crypto/tlscredsx509.c: the files are loaded (and checked) at creation. */
    private static TlsCredsX509 x509(String id, ObjectNode a) throws QmpError {
        String dir = text(a, "dir");
        if (dir == null) {
            throw QmpError.generic("Missing 'dir' property value");
        }
        if (a.has("priority")) {
            throw QmpError.generic("jblockd does not support TLS 'priority' strings (GnuTLS syntax); the JDK's"
                    + " default protocols and cipher suites are used");
        }
        if (a.has("passwordid")) {
            throw QmpError.generic("jblockd does not support encrypted private keys (passwordid)");
        }
        // QCryptoTLSCredsEndpoint's first value, client, is QEMU's default
        X509Credentials.Endpoint endpoint = "server".equals(text(a, "endpoint"))
                ? X509Credentials.Endpoint.SERVER : X509Credentials.Endpoint.CLIENT;
        boolean verifyPeer = bool(a, "verify-peer", true);
        boolean sanityCheck = bool(a, "sanity-check", true);
        try {
            return new TlsCredsX509(id, X509Credentials.load(Path.of(dir), endpoint, verifyPeer, sanityCheck));
        } catch (TlsConfigException e) {
            throw QmpError.generic(e.getMessage());
        }
    }

    private static String text(ObjectNode a, String key) {
        JsonNode v = a.get(key);
        return v == null || v.isNull() ? null : v.asText();
    }

    private static boolean bool(ObjectNode a, String key, boolean dflt) {
        JsonNode v = a.get(key);
        return v == null ? dflt : v.asBoolean();
    }

    /** For {@code --object help}: the types and, per type, its properties. */
    public static final Map<String, List<String>> HELP = Map.of(
            "secret", List.of("data=<string>", "file=<string>", "format=<QCryptoSecretFormat>"),
            "authz-simple", List.of("identity=<string>"),
            "authz-list", List.of("policy=<QAuthZListPolicy>", "rules=<QAuthZListRule list (JSON form only)>"),
            "tls-creds-x509", List.of("dir=<string>", "endpoint=<QCryptoTLSCredsEndpoint>", "sanity-check=<bool>",
                    "verify-peer=<bool>"));
}
