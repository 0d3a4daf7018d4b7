package jblockd.qmp;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;

/**
 * The QAPI-like schema jblockd declares (src/main/resources/jblockd/qapi). The index file
 * {@code schema-index.txt} lists one schema file per line ({@code #} starts a comment); each file
 * is a JSON array of entries in QEMU's qapi/*.json vocabulary:
 * <pre>
 *   {"command": NAME, "data"?: {member: TYPE, "*optional": TYPE} | STRUCT_NAME, "returns"?: TYPE}
 *   {"enum": NAME, "data": ["a", "b"]}
 *   {"struct": NAME, "base"?: STRUCT_NAME, "data": {...}}
 *   {"union": NAME, "base": {...} | STRUCT_NAME, "discriminator": MEMBER, "data": {VALUE: STRUCT_NAME}}
 *   {"alternate": NAME, "data": {BRANCH: TYPE}}
 *   {"event": NAME, "data"?: {...}}
 * </pre>
 * TYPE is a built-in ({@code str int int8..int64 uint8..uint64 size bool number any null}),
 * a declared name, or {@code ["T"]} for an array. Immutable after loading; thread-safe.
 */
public final class QapiSchema {

    /** The index of schema files on the classpath. */
    public static final String INDEX = "jblockd/qapi/schema-index.txt";

    /** A struct or argument member. {@code type} is a type reference ("str", "Foo", "[Foo]"). */
    public record Member(String name, boolean optional, String type) {
    }

    public sealed interface Type permits Builtin, EnumType, StructType, UnionType, AlternateType {
        String name();
    }

    public record Builtin(String name, String jsonType) implements Type {
    }

    public record EnumType(String name, List<String> values) implements Type {
    }

    /** Members include the base's (flattened, base first, as QEMU visits them). */
    public record StructType(String name, List<Member> members) implements Type {
    }

    /** A flat union: the base members (including the discriminator), then one branch per value. */
    public record UnionType(String name, List<Member> baseMembers, String discriminator,
                            Map<String, String> branches) implements Type {
    }

    /** Branches by name; at most one branch per JSON type (object, string, null, ...). */
    public record AlternateType(String name, Map<String, String> branches) implements Type {
    }

    /** {@code argType} null: no arguments. {@code returns} null: returns {@code {}}. */
    public record Command(String name, String argType, String returns) {
    }

    public record Event(String name, String dataType) {
    }

    private static final Map<String, String> BUILTINS = builtins();

    private final Map<String, Type> types = new LinkedHashMap<>();
    private final Map<String, Command> commands = new LinkedHashMap<>();
    private final Map<String, Event> events = new LinkedHashMap<>();

    private QapiSchema() {
        BUILTINS.forEach((n, j) -> types.put(n, new Builtin(n, j)));
    }

    private static Map<String, String> builtins() {
        Map<String, String> m = new LinkedHashMap<>();
        m.put("str", "string");
        for (String t : List.of("int", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                "uint64", "size")) {
            m.put(t, "int");
        }
        m.put("number", "number");
        m.put("bool", "boolean");
        m.put("null", "null");
        m.put("any", "value");
        return Collections.unmodifiableMap(m);
    }

    /** Loads every file the classpath index lists. */
    public static QapiSchema load(QmpJson json) {
        ClassLoader cl = QapiSchema.class.getClassLoader();
        List<String> files = new ArrayList<>();
        try (InputStream in = cl.getResourceAsStream(INDEX)) {
            if (in == null) {
                throw new IllegalStateException("schema index missing: " + INDEX);
            }
            for (String line : new String(in.readAllBytes(), StandardCharsets.UTF_8).split("\n")) {
                String f = line.strip();
                if (!f.isEmpty() && !f.startsWith("#")) {
                    files.add(f);
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        QapiSchema schema = new QapiSchema();
        List<JsonNode> docs = new ArrayList<>();
        for (String f : files) {
            try (InputStream in = cl.getResourceAsStream("jblockd/qapi/" + f)) {
                if (in == null) {
                    throw new IllegalStateException("schema file listed in the index is missing: " + f);
                }
                docs.add(readSchemaFile(in.readAllBytes()));
            } catch (IOException e) {
                throw new IllegalStateException("cannot read schema file " + f + ": " + e.getMessage(), e);
            }
        }
        return fromDocuments(docs);
    }

    /**
     * Reads one schema file: either a JSON array of entries or, as QEMU's qapi/*.json are
     * written, a sequence of entry objects with {@code #} comment lines and single-quoted strings.
     */
    static JsonNode readSchemaFile(byte[] bytes) throws IOException {
        com.fasterxml.jackson.core.JsonFactory f = com.fasterxml.jackson.core.JsonFactory.builder()
                .enable(com.fasterxml.jackson.core.json.JsonReadFeature.ALLOW_YAML_COMMENTS)
                .enable(com.fasterxml.jackson.core.json.JsonReadFeature.ALLOW_JAVA_COMMENTS)
                .enable(com.fasterxml.jackson.core.json.JsonReadFeature.ALLOW_SINGLE_QUOTES)
                .enable(com.fasterxml.jackson.core.json.JsonReadFeature.ALLOW_TRAILING_COMMA)
                .build();
        com.fasterxml.jackson.databind.ObjectMapper m = new com.fasterxml.jackson.databind.ObjectMapper(f);
        com.fasterxml.jackson.databind.node.ArrayNode all = m.createArrayNode();
        try (com.fasterxml.jackson.databind.MappingIterator<JsonNode> it = m.readerFor(JsonNode.class)
                .readValues(bytes)) {
            while (it.hasNextValue()) {
                JsonNode n = it.nextValue();
                if (n.isArray()) {
                    n.forEach(all::add);
                } else {
                    all.add(n);
                }
            }
        }
        return all;
    }

    /** Builds a schema from parsed files (each a JSON array of entries); used by tests. */
    public static QapiSchema fromDocuments(List<JsonNode> docs) {
        QapiSchema s = new QapiSchema();
        // Two passes: structs may name bases declared later (or in another file).
        List<JsonNode> entries = new ArrayList<>();
        docs.forEach(d -> d.forEach(entries::add));
        Map<String, JsonNode> rawStructs = new LinkedHashMap<>();
        for (JsonNode e : entries) {
            if (e.has("struct")) {
                rawStructs.put(e.get("struct").asText(), e);
            }
        }
        for (JsonNode e : entries) {
            if (e.has("enum")) {
                List<String> values = new ArrayList<>();
                e.get("data").forEach(v -> values.add(v.asText()));
                s.define(new EnumType(e.get("enum").asText(), List.copyOf(values)));
            } else if (e.has("struct")) {
                String name = e.get("struct").asText();
                s.define(new StructType(name, structMembers(name, rawStructs)));
            } else if (e.has("union")) {
                String name = e.get("union").asText();
                JsonNode base = e.get("base");
                List<Member> baseMembers = base.isTextual() ? structMembers(base.asText(), rawStructs)
                        : members(base);
                Map<String, String> branches = new LinkedHashMap<>();
                e.get("data").properties().forEach(p -> branches.put(p.getKey(), p.getValue().asText()));
                s.define(new UnionType(name, baseMembers, e.get("discriminator").asText(), branches));
            } else if (e.has("alternate")) {
                Map<String, String> branches = new LinkedHashMap<>();
                e.get("data").properties().forEach(p -> branches.put(p.getKey(), typeRef(p.getValue())));
                s.define(new AlternateType(e.get("alternate").asText(), branches));
            } else if (e.has("command")) {
                String name = e.get("command").asText();
                String argType = null;
                JsonNode data = e.get("data");
                if (data != null && data.isTextual()) {
                    argType = data.asText();
                } else if (data != null && data.isObject()) {
                    argType = "q_obj_" + name + "-arg";
                    s.define(new StructType(argType, members(data)));
                }
                JsonNode ret = e.get("returns");
                if (s.commands.put(name, new Command(name, argType, ret == null ? null : typeRef(ret))) != null) {
                    throw new IllegalStateException("schema: command declared twice: " + name);
                }
            } else if (e.has("event")) {
                String name = e.get("event").asText();
                String dataType = null;
                JsonNode data = e.get("data");
                if (data != null && data.isTextual()) {
                    dataType = data.asText();
                } else if (data != null && data.isObject()) {
                    dataType = "q_obj_" + name + "-arg";
                    s.define(new StructType(dataType, members(data)));
                }
                if (s.events.put(name, new Event(name, dataType)) != null) {
                    throw new IllegalStateException("schema: event declared twice: " + name);
                }
            } else {
                throw new IllegalStateException("unknown schema entry: " + e);
            }
        }
        s.checkReferences();
        return s;
    }

    /** A type may be declared twice (two files) only with the same definition. */
    private void define(Type t) {
        Type old = types.putIfAbsent(t.name(), t);
        if (old != null && !old.equals(t)) {
            throw new IllegalStateException("schema type defined twice, differently: " + t.name());
        }
    }

    private static List<Member> structMembers(String name, Map<String, JsonNode> raw) {
        JsonNode e = raw.get(name);
        if (e == null) {
            throw new IllegalStateException("unknown struct (as base): " + name);
        }
        List<Member> result = new ArrayList<>();
        if (e.has("base")) {
            result.addAll(structMembers(e.get("base").asText(), raw));
        }
        result.addAll(members(e.get("data")));
        return List.copyOf(result);
    }

    private static List<Member> members(JsonNode data) {
        List<Member> result = new ArrayList<>();
        if (data == null) {
            return result;
        }
        Iterator<Map.Entry<String, JsonNode>> it = data.properties().iterator();
        while (it.hasNext()) {
            Map.Entry<String, JsonNode> p = it.next();
            boolean opt = p.getKey().startsWith("*");
            result.add(new Member(opt ? p.getKey().substring(1) : p.getKey(), opt, typeRef(p.getValue())));
        }
        return List.copyOf(result);
    }

    private static String typeRef(JsonNode t) {
        if (t.isArray()) {
            return "[" + t.get(0).asText() + "]";
        }
        if (t.isObject() && t.has("type")) {
            return typeRef(t.get("type"));
        }
        return t.asText();
    }

    private void checkReferences() {
        for (Type t : types.values()) {
            switch (t) {
                case StructType st -> st.members().forEach(m -> checkRef(m.type(), st.name()));
                case UnionType u -> {
                    u.baseMembers().forEach(m -> checkRef(m.type(), u.name()));
                    Member disc = u.baseMembers().stream().filter(m -> m.name().equals(u.discriminator()))
                            .findFirst().orElseThrow(() -> new IllegalStateException(
                                    "union " + u.name() + ": discriminator not a base member"));
                    if (!(types.get(disc.type()) instanceof EnumType)) {
                        throw new IllegalStateException("union " + u.name() + ": discriminator is no enum");
                    }
                    u.branches().values().forEach(b -> checkRef(b, u.name()));
                }
                case AlternateType a -> a.branches().values().forEach(b -> checkRef(b, a.name()));
                default -> {
                }
            }
        }
        commands.values().forEach(c -> {
            if (c.argType() != null) {
                checkRef(c.argType(), c.name());
            }
            // Return types are documentation only (results are not validated), so a return type
            // another schema file has not declared yet does not stop the daemon.
        });
        events.values().forEach(e -> {
            if (e.dataType() != null) {
                checkRef(e.dataType(), e.name());
            }
        });
    }

    private void checkRef(String ref, String where) {
        String n = ref.startsWith("[") ? ref.substring(1, ref.length() - 1) : ref;
        if (!types.containsKey(n)) {
            throw new IllegalStateException("schema: " + where + " refers to unknown type " + n);
        }
    }

    /** The type a reference names; arrays are handled by callers. */
    public Type type(String name) {
        Type t = types.get(name);
        if (t == null) {
            throw new IllegalArgumentException("unknown schema type " + name);
        }
        return t;
    }

    public Map<String, Type> types() {
        return Collections.unmodifiableMap(types);
    }

    public Command command(String name) {
        return commands.get(name);
    }

    public Map<String, Command> commands() {
        return Collections.unmodifiableMap(commands);
    }

    public Map<String, Event> events() {
        return Collections.unmodifiableMap(events);
    }

    /** The members of a struct (or a union's base members), for introspection and keyval. */
    public static boolean isArray(String ref) {
        return ref.startsWith("[");
    }

    public static String elementType(String ref) {
        return ref.substring(1, ref.length() - 1);
    }
}
