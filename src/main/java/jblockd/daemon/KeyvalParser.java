package jblockd.daemon;

import java.util.Iterator;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.fasterxml.jackson.databind.node.TextNode;

/**
 * QEMU's keyval syntax (qemu/qemu util/keyval.c) for command-line options:
 * {@code key=value,a.b=c}. A {@code ,,} in a value stands for one comma; dotted keys build nested
 * objects; an object whose keys are exactly {@code 0..n-1} becomes an array
 * ({@code inject-error.0.event=read_aio}); the first item may omit {@code key=} when the option
 * has an implied key ({@code --export nbd,...} means {@code type=nbd}). Every value stays a
 * string: keyval is typed by the schema, so {@code QapiValidator} in keyval mode converts numbers
 * and booleans. Stateless.
 */
public final class KeyvalParser {
    private static final JsonNodeFactory NF = JsonNodeFactory.instance;

    private KeyvalParser() {
    }

    /** A keyval syntax error; the message is the reason without the option name. */
    public static final class KeyvalException extends Exception {
        private static final long serialVersionUID = 1L;

        public KeyvalException(String message) {
            super(message);
        }
    }

    /** Parses {@code s}; {@code impliedKey} may be null. */
    public static ObjectNode parse(String s, String impliedKey) throws KeyvalException {
        ObjectNode root = NF.objectNode();
        int i = 0;
        boolean first = true;
        while (i <= s.length()) {
            if (i == s.length()) {
                break;
            }
            // key: up to '=' or ',' (keys cannot contain ',' or '=')
            int keyEnd = i;
            while (keyEnd < s.length() && s.charAt(keyEnd) != '=' && s.charAt(keyEnd) != ',') {
                keyEnd++;
            }
            String key;
            StringBuilder value = new StringBuilder();
            int j;
            if (keyEnd < s.length() && s.charAt(keyEnd) == '=') {
                key = s.substring(i, keyEnd);
                j = keyEnd + 1;
            } else if (first && impliedKey != null) {
                key = impliedKey;
                j = i;
            } else {
                throw new KeyvalException("Expected '=' after parameter '" + s.substring(i, keyEnd) + "'");
            }
            while (j < s.length()) {
                char c = s.charAt(j);
                if (c == ',') {
                    if (j + 1 < s.length() && s.charAt(j + 1) == ',') {
                        value.append(',');
                        j += 2;
                        continue;
                    }
                    break;
                }
                value.append(c);
                j++;
            }
            put(root, key, value.toString());
            first = false;
            i = j + 1;
            if (j == s.length()) {
                break;
            }
        }
        return (ObjectNode) listify(root, "");
    }

    private static void put(ObjectNode root, String key, String value) throws KeyvalException {
        String[] parts = key.split("\\.", -1);
        ObjectNode cur = root;
        for (int p = 0; p < parts.length; p++) {
            String part = parts[p];
            // util/keyval.c: the first fragment is a QAPI name, later ones a name or a list index
            if (!(qapiName(part) || (p > 0 && isIndex(part)))) {
                throw new KeyvalException("Invalid parameter '" + key + "'");
            }
            if (part.length() > MAX_FRAGMENT) {
                throw new KeyvalException("Parameter '" + key + "' is too long");
            }
            boolean last = p == parts.length - 1;
            JsonNode existing = cur.get(part);
            if (last) {
                if (existing != null) {
                    if (existing.isObject()) {
                        throw new KeyvalException("Parameter '" + key + "' used inconsistently");
                    }
                    throw new KeyvalException("Parameter '" + key + "' appears more than once");
                }
                cur.put(part, value);
            } else {
                if (existing == null) {
                    cur = cur.putObject(part);
                } else if (existing.isObject()) {
                    cur = (ObjectNode) existing;
                } else {
                    throw new KeyvalException("Parameter '" + String.join(".",
                            java.util.Arrays.copyOf(parts, p + 1)) + "' used inconsistently");
                }
            }
        }
    }

    /** util/keyval.c's key_in_cur[128]: a longer key fragment is refused. */
    private static final int MAX_FRAGMENT = 127;

    /** qapi-util.c parse_qapi_name(): an ASCII letter, then letters, digits, '-' and '_'. */
    private static boolean qapiName(String s) {
        if (s.isEmpty() || !asciiLetter(s.charAt(0))) {
            return false;
        }
        return s.chars().allMatch(c -> asciiLetter(c) || (c >= '0' && c <= '9') || c == '-' || c == '_');
    }

    private static boolean isIndex(String s) {
        return !s.isEmpty() && s.chars().allMatch(c -> c >= '0' && c <= '9');
    }

    private static boolean asciiLetter(int c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    }

    /**
     * util/keyval.c keyval_listify(): objects keyed 0..n-1 become arrays. The root is never a
     * list (its keys are names, see put), so the result of parse is always an object.
     */
    private static JsonNode listify(JsonNode node, String path) throws KeyvalException {
        if (!node.isObject()) {
            return node;
        }
        ObjectNode obj = (ObjectNode) node;
        int indexes = 0;
        for (Iterator<String> it = obj.fieldNames(); it.hasNext(); ) {
            if (isIndex(it.next())) {
                indexes++;
            }
        }
        if (indexes > 0 && indexes < obj.size()) {
            throw new KeyvalException("Parameters '" + path + ".*' used inconsistently");
        }
        boolean allIndexes = indexes > 0;
        ObjectNode out = NF.objectNode();
        for (Map.Entry<String, JsonNode> e : obj.properties()) {
            out.set(e.getKey(), listify(e.getValue(), path.isEmpty() ? e.getKey() : path + "." + e.getKey()));
        }
        if (!allIndexes) {
            return out;
        }
        ArrayNode arr = NF.arrayNode();
        for (int i = 0; i < out.size(); i++) {
            JsonNode el = out.get(Integer.toString(i));
            if (el == null) {
                throw new KeyvalException("Parameter '" + (path.isEmpty() ? "" : path + ".") + i + "' missing");
            }
            arr.add(el);
        }
        return arr;
    }

    /** Convenience for tests: a string leaf. */
    static JsonNode text(String s) {
        return TextNode.valueOf(s);
    }
}
