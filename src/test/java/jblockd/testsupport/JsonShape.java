package jblockd.testsupport;

import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;

import com.fasterxml.jackson.databind.JsonNode;

/**
 * What the QEMU differential tests compare when values may differ: the member paths of a QMP
 * reply and the JSON type at each ("a.b" paths, array elements under "[]", arrays as the union
 * of their elements' members), sorted.
 */
public final class JsonShape {
    private JsonShape() {
    }

    /** Member path → JSON node type name. */
    public static Map<String, String> of(JsonNode n) {
        Map<String, String> out = new TreeMap<>();
        collect(n, "", out);
        return out;
    }

    private static void collect(JsonNode n, String path, Map<String, String> out) {
        if (n.isObject()) {
            n.properties().forEach(e -> {
                String p = path.isEmpty() ? e.getKey() : path + "." + e.getKey();
                out.put(p, e.getValue().getNodeType().name());
                collect(e.getValue(), p, out);
            });
        } else if (n.isArray()) {
            n.forEach(e -> collect(e, path + "[]", out));
        }
    }

    /**
     * Tears down a side-by-side pair (any argument may be null): both QMP clients, then QEMU
     * (SIGTERM, 5 s), then the jblockd daemon.
     */
    public static void stopPair(QmpTestClient q, QmpTestClient j, Process qemu, DaemonProcess jblockd)
            throws InterruptedException {
        if (q != null) {
            q.close();
        }
        if (j != null) {
            j.close();
        }
        if (qemu != null) {
            qemu.destroy();
            qemu.waitFor(5, TimeUnit.SECONDS);
        }
        if (jblockd != null) {
            jblockd.close();
        }
    }
}
