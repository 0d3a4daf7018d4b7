package jblockd.client;

import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.Iterator;
import java.util.Map;
import java.util.Optional;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

/**
 * The RBD image behind a device or node, and the QMP steps of the snapshot-based backups
 * (docs/rbd.md): take an internal snapshot of the device ({@code blockdev-snapshot-internal-sync},
 * drained: crash-consistent), open it as a read-only rbd node ({@code blockdev-add} with
 * {@code snapshot}), back that node up (nothing of the guest's path changes: no copy-before-write),
 * then remove the node and, unless kept, the snapshot. The image's connection options are the
 * ones its node shows in its {@code json:} filename (QEMU's strong options: pool, namespace,
 * image, conf, user, server); a key given as a secret object is not among them and is passed on
 * by the caller.
 */
public final class RbdSnapshots {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Pattern SERVER = Pattern.compile("server\\.(\\d+)\\.(host|port)");
    private static final DateTimeFormatter STAMP = DateTimeFormatter.ofPattern("yyyyMMdd'T'HHmmss.SSS'Z'")
            .withZone(ZoneOffset.UTC);

    private final QmpClient qmp;
    private final String device;
    private final ObjectNode options;

    private RbdSnapshots(QmpClient qmp, String device, ObjectNode options) {
        this.qmp = qmp;
        this.device = device;
        this.options = options;
    }

    /**
     * The RBD image of {@code deviceOrNode}: its node is an rbd node, or a raw node over one with
     * no options of its own; empty for anything else (a qcow2 over RBD keeps its own data
     * layout, and a raw window is not the whole image).
     *
     * @throws DeviceNotFoundException when there is no such device or node
     */
    public static Optional<RbdSnapshots> of(QmpClient qmp, String deviceOrNode) {
        String node = NodeLookup.resolve(qmp, deviceOrNode).node();
        for (JsonNode n : qmp.execute("query-named-block-nodes", Map.of("flat", true))) {
            if (n.path("node-name").asText().equals(node)) {
                return rbdOptions(n.path("file").asText(), n.path("drv").asText())
                        .map(o -> new RbdSnapshots(qmp, deviceOrNode, o));
            }
        }
        return Optional.empty();
    }

    /** The rbd blockdev-add options in a node's filename, server.N.* folded back into a list. */
    static Optional<ObjectNode> rbdOptions(String filename, String drv) {
        if (!filename.startsWith("json:") || !(drv.equals("rbd") || drv.equals("raw"))) {
            return Optional.empty();
        }
        JsonNode j;
        try {
            j = JSON.readTree(filename.substring(5));
        } catch (JsonProcessingException e) {
            return Optional.empty();
        }
        if (j.path("driver").asText().equals("raw") && j.size() == 2 && j.path("file").isObject()) {
            j = j.get("file");
        }
        if (!j.path("driver").asText().equals("rbd") || j.has("snapshot")) {
            return Optional.empty();
        }
        ObjectNode o = JSON.createObjectNode();
        ArrayNode servers = JSON.createArrayNode();
        for (Iterator<Map.Entry<String, JsonNode>> it = j.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            Matcher m = SERVER.matcher(e.getKey());
            if (m.matches()) {
                int i = Integer.parseInt(m.group(1));
                while (servers.size() <= i) {
                    servers.addObject();
                }
                ((ObjectNode) servers.get(i)).put(m.group(2), e.getValue().asText());
            } else {
                o.set(e.getKey(), e.getValue());
            }
        }
        if (!servers.isEmpty()) {
            o.set("server", servers);
        }
        return Optional.of(o);
    }

    /** A snapshot name for a backup taken now: {@code jblockctl-20261202T161500.123Z}. */
    public static String newName() {
        return "jblockctl-" + STAMP.format(Instant.now());
    }

    /** The device or node name this was made for. */
    public String device() {
        return device;
    }

    /** blockdev-snapshot-internal-sync: the daemon drains the device, then snapshots the image. */
    public void take(String snapshot) {
        qmp.execute("blockdev-snapshot-internal-sync", Map.of("device", device, "name", snapshot));
    }

    /** blockdev-snapshot-delete-internal-sync by name. */
    public void delete(String snapshot) {
        qmp.execute("blockdev-snapshot-delete-internal-sync", Map.of("device", device, "name", snapshot));
    }

    /**
     * blockdev-add of the image at {@code snapshot}, read-only, as {@code nodeName};
     * {@code keySecret} (the id of a secret object of the daemon) when the key is not in the
     * conf file's keyring.
     */
    public void open(String snapshot, String nodeName, String keySecret) {
        ObjectNode o = options.deepCopy();
        o.put("node-name", nodeName);
        o.put("snapshot", snapshot);
        o.put("read-only", true);
        if (keySecret != null) {
            o.put("key-secret", keySecret);
        }
        qmp.execute("blockdev-add", o);
    }

    /** blockdev-del of a node {@link #open} made. */
    public void close(String nodeName) {
        qmp.execute("blockdev-del", Map.of("node-name", nodeName));
    }
}
