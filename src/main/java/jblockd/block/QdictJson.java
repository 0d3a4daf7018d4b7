package jblockd.block;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * QEMU's {@code json:{...}} filenames (block.c bdrv_refresh_filename, qobject_to_json of a
 * QDict): members in the QDict's iteration order, which is hash-bucket order
 * (qobject/qdict.c: {@code tdb_hash(key) % 512}, buckets ascending, a bucket's entries newest
 * first), values as QEMU prints them ({@code "key": value} joined by {@code ", "}). Strings,
 * numbers, booleans, lists and nested maps (insertion-ordered, e.g. LinkedHashMap).
 */
public final class QdictJson {
    private static final int BUCKETS = 512;

    private QdictJson() {
    }

    /** {@code json:} followed by {@code options} printed as QEMU prints the QDict. */
    public static String filename(Map<String, ?> options) {
        StringBuilder b = new StringBuilder("json:");
        print(options, b);
        return b.toString();
    }

    static int bucket(String key) {
        int value = 0x238F13AF * key.getBytes(java.nio.charset.StandardCharsets.UTF_8).length;
        byte[] bytes = key.getBytes(java.nio.charset.StandardCharsets.UTF_8);
        for (int i = 0; i < bytes.length; i++) {
            value += (bytes[i] & 0xff) << (i * 5 % 24);
        }
        return Integer.remainderUnsigned(1103515243 * value + 12345, BUCKETS);
    }

    private static void print(Object v, StringBuilder b) {
        switch (v) {
            case Map<?, ?> m -> {
                List<String> keys = new ArrayList<>();
                for (Object k : m.keySet()) {
                    keys.add(0, (String) k); // newest first within a bucket (QLIST_INSERT_HEAD)
                }
                keys.sort(java.util.Comparator.comparingInt(QdictJson::bucket)); // stable
                b.append('{');
                for (int i = 0; i < keys.size(); i++) {
                    if (i > 0) {
                        b.append(", ");
                    }
                    string(keys.get(i), b);
                    b.append(": ");
                    print(m.get(keys.get(i)), b);
                }
                b.append('}');
            }
            case List<?> l -> {
                b.append('[');
                for (int i = 0; i < l.size(); i++) {
                    if (i > 0) {
                        b.append(", ");
                    }
                    print(l.get(i), b);
                }
                b.append(']');
            }
            case String s -> string(s, b);
            default -> b.append(v);
        }
    }

    /** qobject/qjson.c to_json: the JSON escapes QEMU writes. */
    private static void string(String s, StringBuilder b) {
        b.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> b.append("\\\"");
                case '\\' -> b.append("\\\\");
                case '\b' -> b.append("\\b");
                case '\f' -> b.append("\\f");
                case '\n' -> b.append("\\n");
                case '\r' -> b.append("\\r");
                case '\t' -> b.append("\\t");
                default -> {
                    if (c < 0x20) {
                        b.append(String.format("\\u%04X", (int) c));
                    } else {
                        b.append(c);
                    }
                }
            }
        }
        b.append('"');
    }
}
