package jblockd.qmp;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.BooleanNode;
import com.fasterxml.jackson.databind.node.DoubleNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.LongNode;
import com.fasterxml.jackson.databind.node.NullNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.fasterxml.jackson.databind.node.TextNode;

import jblockd.qapi.QmpError;
import jblockd.qmp.QapiSchema.AlternateType;
import jblockd.qmp.QapiSchema.Builtin;
import jblockd.qmp.QapiSchema.EnumType;
import jblockd.qmp.QapiSchema.Member;
import jblockd.qmp.QapiSchema.StructType;
import jblockd.qmp.QapiSchema.UnionType;

/**
 * Checks a JSON value against a schema type the way QEMU's QObject input visitor does
 * (qemu/qemu qapi/qobject-input-visitor.c and the generated qapi-visit-*.c): members are visited
 * in schema order (base first, then a union's branch), the first failure wins, and unexpected
 * members of an object are reported only after all its declared members were visited. Error
 * texts are QEMU's:
 * <ul>
 *   <li>{@code Parameter 'file.filename' is missing} / {@code ... is unexpected} (dotted path,
 *       list elements as {@code inject-error[0].event});</li>
 *   <li>{@code Invalid parameter type for 'x', expected: integer|string|boolean|number|object|array|null};</li>
 *   <li>{@code Parameter 'x' does not accept value 'v'} (enums; QEMU names only the member itself,
 *       and {@code 'null'} for a list element);</li>
 *   <li>{@code Invalid parameter type for 'x', expected: BlockdevRef} (alternates, member name only).</li>
 * </ul>
 * In keyval mode (command-line options) scalars arrive as strings and are converted to the
 * schema's type ({@code Parameter 'x' expects integer}, {@code ... expects 'on' or 'off'},
 * {@code ... expects size}), as QEMU's keyval input visitor does.
 * <p>
 * The result is a normalised copy (numbers and booleans converted), ready for data binding.
 * Stateless and thread-safe.
 */
public final class QapiValidator {
    private static final JsonNodeFactory NF = JsonNodeFactory.instance;
    private static final BigInteger TWO_64 = BigInteger.ONE.shiftLeft(64);
    private static final BigInteger MIN_LONG = BigInteger.valueOf(Long.MIN_VALUE);

    private final QapiSchema schema;

    public QapiValidator(QapiSchema schema) {
        this.schema = schema;
    }

    /** Validates a command's {@code arguments} ({@code null} = none given). */
    public ObjectNode validateArguments(QapiSchema.Command command, JsonNode args, boolean keyval) throws QmpError {
        JsonNode a = args == null ? NF.objectNode() : args;
        Walk w = new Walk(keyval);
        if (command.argType() == null) {
            w.members(a, List.of(), null);
            return NF.objectNode();
        }
        return (ObjectNode) w.visit(a, command.argType(), null);
    }

    /** Validates a value against a named type (tests, keyval option parsing). */
    public JsonNode validate(JsonNode value, String typeRef, boolean keyval) throws QmpError {
        return new Walk(keyval).visit(value, typeRef, null);
    }

    /** One validation pass: keeps the path of member names for QEMU's full names. */
    private final class Walk {
        private final boolean keyval;
        private final List<String> path = new ArrayList<>();

        Walk(boolean keyval) {
            this.keyval = keyval;
        }

        /** QEMU's full_name(): {@code a.b[0].c}, keyval lists as {@code a.b.0.c}. */
        private String fullName() {
            StringBuilder sb = new StringBuilder();
            for (String seg : path) {
                if (seg.startsWith("[")) {
                    sb.append(keyval ? "." + seg.substring(1, seg.length() - 1) : seg);
                } else {
                    if (!sb.isEmpty()) {
                        sb.append('.');
                    }
                    sb.append(seg);
                }
            }
            return sb.isEmpty() ? "<anonymous>" : sb.toString();
        }

        private QmpError typeError(String expected) {
            return QmpError.generic("Invalid parameter type for '" + fullName() + "', expected: " + expected);
        }

        private QmpError valueError(String expected) {
            return QmpError.generic("Parameter '" + fullName() + "' expects " + expected);
        }

        /** {@code name}: the member's own name (null for list elements), as QEMU's enum errors use it. */
        JsonNode visit(JsonNode v, String ref, String name) throws QmpError {
            if (QapiSchema.isArray(ref)) {
                return array(v, QapiSchema.elementType(ref));
            }
            return switch (schema.type(ref)) {
                case Builtin b -> builtin(v, b.name());
                case EnumType e -> enumValue(v, e, name);
                case StructType s -> {
                    if (!v.isObject()) {
                        throw typeError("object");
                    }
                    ObjectNode out = NF.objectNode();
                    members(v, s.members(), out);
                    yield out;
                }
                case UnionType u -> union(v, u);
                case AlternateType a -> alternate(v, a, name);
            };
        }

        private JsonNode array(JsonNode v, String elem) throws QmpError {
            if (!v.isArray()) {
                throw typeError("array");
            }
            ArrayNode out = NF.arrayNode();
            for (int i = 0; i < v.size(); i++) {
                path.add("[" + i + "]");
                out.add(visit(v.get(i), elem, null));
                path.removeLast();
            }
            return out;
        }

        /** Visits declared members in order, then reports the first undeclared one. */
        void members(JsonNode v, List<Member> members, ObjectNode out) throws QmpError {
            Set<String> seen = new HashSet<>();
            visitMembers(v, members, out, seen);
            checkUnexpected(v, seen);
        }

        private void visitMembers(JsonNode v, List<Member> members, ObjectNode out, Set<String> seen)
                throws QmpError {
            for (Member m : members) {
                JsonNode mv = v.get(m.name());
                path.add(m.name());
                try {
                    if (mv == null) {
                        if (!m.optional()) {
                            throw QmpError.generic("Parameter '" + fullName() + "' is missing");
                        }
                        continue;
                    }
                    seen.add(m.name());
                    JsonNode r = visit(mv, m.type(), m.name());
                    if (out != null) {
                        out.set(m.name(), r);
                    }
                } finally {
                    path.removeLast();
                }
            }
        }

        private void checkUnexpected(JsonNode v, Set<String> seen) throws QmpError {
            for (Map.Entry<String, JsonNode> e : v.properties()) {
                if (!seen.contains(e.getKey())) {
                    path.add(e.getKey());
                    String full = fullName();
                    path.removeLast();
                    throw QmpError.generic("Parameter '" + full + "' is unexpected");
                }
            }
        }

        private JsonNode union(JsonNode v, UnionType u) throws QmpError {
            if (!v.isObject()) {
                throw typeError("object");
            }
            ObjectNode out = NF.objectNode();
            Set<String> seen = new HashSet<>();
            visitMembers(v, u.baseMembers(), out, seen);
            String branch = u.branches().get(out.get(u.discriminator()).asText());
            if (branch != null) {
                StructType bs = (StructType) schema.type(branch);
                visitMembers(v, bs.members(), out, seen);
            }
            checkUnexpected(v, seen);
            return out;
        }

        private JsonNode alternate(JsonNode v, AlternateType a, String name) throws QmpError {
            for (String b : a.branches().values()) {
                if (matchesAlternateBranch(v, b)) {
                    return visit(v, b, name);
                }
            }
            if (keyval && v.isTextual()) {
                // keyval gives only strings: take the first scalar branch that parses
                for (String b : a.branches().values()) {
                    if (!QapiSchema.isArray(b) && schema.type(b) instanceof Builtin) {
                        try {
                            return visit(v, b, name);
                        } catch (QmpError ignored) {
                            // try the next branch
                        }
                    }
                }
            }
            throw QmpError.generic("Invalid parameter type for '" + (name == null ? "null" : name)
                    + "', expected: " + a.name());
        }

        private boolean matchesAlternateBranch(JsonNode v, String ref) {
            if (QapiSchema.isArray(ref)) {
                return v.isArray();
            }
            return switch (schema.type(ref)) {
                case StructType s -> v.isObject();
                case UnionType u -> v.isObject();
                case AlternateType x -> false;
                case EnumType e -> v.isTextual();
                case Builtin b -> switch (b.jsonType()) {
                    case "string" -> v.isTextual();
                    case "int" -> v.isIntegralNumber();
                    case "number" -> v.isNumber();
                    case "boolean" -> v.isBoolean();
                    case "null" -> v.isNull();
                    default -> true;
                };
            };
        }

        private JsonNode enumValue(JsonNode v, EnumType e, String name) throws QmpError {
            if (!v.isTextual()) {
                throw typeError("string");
            }
            String s = v.asText();
            if (!e.values().contains(s)) {
                throw QmpError.generic("Parameter '" + (name == null ? "null" : name)
                        + "' does not accept value '" + s + "'");
            }
            return v;
        }

        private JsonNode builtin(JsonNode v, String t) throws QmpError {
            return switch (t) {
                case "str" -> {
                    if (!v.isTextual()) {
                        throw typeError("string");
                    }
                    yield v;
                }
                case "bool" -> bool(v);
                case "number" -> number(v);
                case "null" -> {
                    if (!v.isNull()) {
                        throw typeError("null");
                    }
                    yield NullNode.instance;
                }
                case "any" -> v.deepCopy();
                case "size" -> size(v);
                case "uint64" -> uint64(v);
                case "int", "int64" -> LongNode.valueOf(int64(v));
                case "int8" -> ranged(int64(v), Byte.MIN_VALUE, Byte.MAX_VALUE, t);
                case "int16" -> ranged(int64(v), Short.MIN_VALUE, Short.MAX_VALUE, t);
                case "int32" -> ranged(int64(v), Integer.MIN_VALUE, Integer.MAX_VALUE, t);
                case "uint8" -> ranged(uint64(v).asLong(), 0, 0xff, t);
                case "uint16" -> ranged(uint64(v).asLong(), 0, 0xffff, t);
                case "uint32" -> ranged(uint64(v).asLong(), 0, 0xffffffffL, t);
                default -> throw new IllegalStateException("unknown builtin " + t);
            };
        }

        /**
         * qapi-visit-core.c visit_type_intN/uintN: out of range is "Parameter 'x' expects
         * uint32_t" (the C type name: QEMU passes "uint32_t", "int8_t", ...), naming only the
         * member itself.
         */
        private JsonNode ranged(long value, long min, long max, String t) throws QmpError {
            if (value < min || value > max) {
                String last = path.isEmpty() ? "null" : path.getLast();
                throw QmpError.generic("Parameter '" + (last.startsWith("[") ? "null" : last)
                        + "' expects " + t + "_t");
            }
            return LongNode.valueOf(value);
        }

        private long int64(JsonNode v) throws QmpError {
            if (keyval && v.isTextual()) {
                try {
                    return parseCInteger(v.asText());
                } catch (NumberFormatException e) {
                    throw valueError("integer");
                }
            }
            if (!v.isIntegralNumber() || !v.canConvertToLong()) {
                throw typeError("integer");
            }
            return v.asLong();
        }

        /** uint64: QEMU also accepts negative int64 values "for backward compatibility". */
        private LongNode uint64(JsonNode v) throws QmpError {
            BigInteger b;
            if (keyval && v.isTextual()) {
                try {
                    b = BigInteger.valueOf(parseCInteger(v.asText()));
                } catch (NumberFormatException e) {
                    throw valueError("uint64");
                }
            } else if (v.isIntegralNumber()) {
                b = v.bigIntegerValue();
            } else {
                throw valueError("uint64");
            }
            if (b.compareTo(MIN_LONG) < 0 || b.compareTo(TWO_64) >= 0) {
                throw valueError("uint64");
            }
            return LongNode.valueOf(b.longValue());
        }

        private JsonNode size(JsonNode v) throws QmpError {
            if (keyval && v.isTextual()) {
                long s = parseSize(v.asText());
                if (s < 0) {
                    throw valueError("size");
                }
                return LongNode.valueOf(s);
            }
            if (!v.isIntegralNumber()) {
                throw typeError("integer");
            }
            BigInteger b = v.bigIntegerValue();
            if (b.compareTo(MIN_LONG) < 0 || b.compareTo(TWO_64) >= 0) {
                throw typeError("integer");
            }
            return LongNode.valueOf(b.longValue());
        }

        private JsonNode bool(JsonNode v) throws QmpError {
            if (keyval && v.isTextual()) {
                // qapi/qapi-util.c qapi_bool_parse
                return switch (v.asText()) {
                    case "on", "yes", "true", "y" -> BooleanNode.TRUE;
                    case "off", "no", "false", "n" -> BooleanNode.FALSE;
                    default -> throw valueError("'on' or 'off'");
                };
            }
            if (!v.isBoolean()) {
                throw typeError("boolean");
            }
            return v;
        }

        private JsonNode number(JsonNode v) throws QmpError {
            if (keyval && v.isTextual()) {
                try {
                    return DoubleNode.valueOf(Double.parseDouble(v.asText()));
                } catch (NumberFormatException e) {
                    throw valueError("number");
                }
            }
            if (!v.isNumber()) {
                throw typeError("number");
            }
            return v;
        }
    }

    /** strtoll with base 0: decimal, 0x hex, leading-0 octal, optional sign. */
    static long parseCInteger(String s) {
        String t = s.strip();
        boolean neg = false;
        if (t.startsWith("-") || t.startsWith("+")) {
            neg = t.startsWith("-");
            t = t.substring(1);
        }
        long v;
        if (t.startsWith("0x") || t.startsWith("0X")) {
            v = Long.parseLong(t.substring(2), 16);
        } else if (t.length() > 1 && t.startsWith("0")) {
            v = Long.parseLong(t.substring(1), 8);
        } else {
            v = Long.parseLong(t);
        }
        return neg ? -v : v;
    }

    /**
     * qemu_strtosz(): a non-negative number with an optional binary suffix
     * (B, K, M, G, T, P, E; case-insensitive); -1 when invalid.
     */
    static long parseSize(String s) {
        String t = s.strip();
        if (t.isEmpty()) {
            return -1;
        }
        int shift = 0;
        char last = Character.toUpperCase(t.charAt(t.length() - 1));
        int idx = "BKMGTPE".indexOf(last);
        if (idx >= 0) {
            shift = idx * 10;
            t = t.substring(0, t.length() - 1);
        }
        try {
            if (t.contains(".")) {
                double d = Double.parseDouble(t) * Math.pow(2, shift);
                return d < 0 || d >= 0x1p63 ? -1 : (long) d;
            }
            long v = Long.parseLong(t);
            if (v < 0 || (shift > 0 && v > (Long.MAX_VALUE >> shift))) {
                return -1;
            }
            return v << shift;
        } catch (NumberFormatException e) {
            return -1;
        }
    }

    /** A string as it came from keyval; kept here so keyval users need no Jackson imports. */
    public static JsonNode text(String s) {
        return TextNode.valueOf(s);
    }
}
