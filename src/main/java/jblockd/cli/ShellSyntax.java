package jblockd.cli;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.json.JsonReadFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.json.JsonMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.fasterxml.jackson.databind.node.TextNode;
import java.util.ArrayList;
import java.util.List;

/**
 * The request syntax of {@code jblockctl shell} and {@code jblockctl qmp}, as QEMU's qmp-shell:
 * {@code COMMAND key=value ...}, where a value that parses as JSON is taken as JSON (numbers,
 * {@code true}/{@code false}, {@code null}, {@code {...}}, {@code [...]}, {@code "quoted"}) and
 * anything else is a string; dotted keys build nested objects ({@code addr.type=unix}). A line
 * starting with {@code {} is a whole request object in JSON.
 */
final class ShellSyntax {
    static final JsonMapper JSON = JsonMapper.builder().enable(JsonReadFeature.ALLOW_SINGLE_QUOTES).build();

    private ShellSyntax() {
    }

    /** Parses a line into a request object; IllegalArgumentException with a one-line reason. */
    static ObjectNode parse(String line) {
        String s = line.strip();
        if (s.startsWith("{")) {
            JsonNode n;
            try {
                n = JSON.readTree(s);
            } catch (JsonProcessingException e) {
                throw new IllegalArgumentException("invalid JSON: " + e.getOriginalMessage());
            }
            if (!n.isObject() || !n.has("execute") && !n.has("exec-oob")) {
                throw new IllegalArgumentException("a JSON request needs an \"execute\" member");
            }
            return (ObjectNode) n;
        }
        List<String> words = split(s);
        if (words.isEmpty()) {
            throw new IllegalArgumentException("empty command");
        }
        ObjectNode req = JSON.createObjectNode();
        req.put("execute", words.get(0));
        ObjectNode args = JSON.createObjectNode();
        for (String w : words.subList(1, words.size())) {
            int eq = w.indexOf('=');
            if (eq <= 0) {
                throw new IllegalArgumentException("expected key=value, got '" + w + "'");
            }
            put(args, w.substring(0, eq), value(w.substring(eq + 1)));
        }
        if (!args.isEmpty()) {
            req.set("arguments", args);
        }
        return req;
    }

    private static void put(ObjectNode args, String key, JsonNode value) {
        String[] path = key.split("\\.");
        ObjectNode at = args;
        for (int i = 0; i < path.length - 1; i++) {
            JsonNode next = at.get(path[i]);
            if (next == null) {
                next = at.putObject(path[i]);
            } else if (!next.isObject()) {
                throw new IllegalArgumentException("'" + key + "' conflicts with '" + path[i] + "'");
            }
            at = (ObjectNode) next;
        }
        if (at.has(path[path.length - 1])) {
            throw new IllegalArgumentException("'" + key + "' given twice");
        }
        at.set(path[path.length - 1], value);
    }

    private static JsonNode value(String v) {
        if (!v.isEmpty() && "{[\"'-0123456789tfn".indexOf(v.charAt(0)) >= 0) {
            try {
                return JSON.readTree(v);
            } catch (JsonProcessingException e) {
                // not JSON: a plain string, as qmp-shell does
            }
        }
        return TextNode.valueOf(v);
    }

    /** Splits on blanks, keeping quoted ('...' or "...") and bracketed ({...}, [...]) parts whole. */
    static List<String> split(String s) {
        List<String> out = new ArrayList<>();
        StringBuilder cur = new StringBuilder();
        int depth = 0;
        char quote = 0;
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (quote != 0) {
                cur.append(c);
                if (c == '\\' && i + 1 < s.length()) {
                    cur.append(s.charAt(++i));
                } else if (c == quote) {
                    quote = 0;
                }
            } else if (c == '"' || c == '\'') {
                quote = c;
                cur.append(c);
            } else if (c == '{' || c == '[') {
                depth++;
                cur.append(c);
            } else if (c == '}' || c == ']') {
                depth--;
                cur.append(c);
            } else if (Character.isWhitespace(c) && depth <= 0) {
                if (!cur.isEmpty()) {
                    out.add(cur.toString());
                    cur.setLength(0);
                }
            } else {
                cur.append(c);
            }
        }
        if (quote != 0 || depth > 0) {
            throw new IllegalArgumentException("unterminated " + (quote != 0 ? "quote" : "bracket"));
        }
        if (!cur.isEmpty()) {
            out.add(cur.toString());
        }
        return out;
    }
}
