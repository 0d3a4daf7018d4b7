package jblockd.client;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.ArrayList;
import java.util.List;

/** The export commands of SPEC §3 ("export"). Obtained from {@link QmpClient#exports()}. */
public final class ExportCommands {
    private final QmpClient qmp;

    ExportCommands(QmpClient qmp) {
        this.qmp = qmp;
    }

    /** {@code nbd-server-start} on a UNIX socket. */
    public void nbdServerStartUnix(String path) {
        ObjectNode data = obj().put("path", path);
        nbdServerStart(obj().put("type", "unix").set("data", data));
    }

    /** {@code nbd-server-start} on TCP. */
    public void nbdServerStartTcp(String host, int port) {
        ObjectNode data = obj().put("host", host).put("port", Integer.toString(port));
        nbdServerStart(obj().put("type", "inet").set("data", data));
    }

    /**
     * {@code nbd-server-start} with an address as QEMU 7.2 spells it (SocketAddressLegacy:
     * {@code {"type": "inet", "data": {"host", "port"}}}).
     */
    public void nbdServerStart(JsonNode addr) {
        qmp.execute("nbd-server-start", obj().set("addr", addr));
    }

    /** {@code nbd-server-add}: exports a device (or node); {@code name} null = the device name. */
    public void nbdServerAdd(String device, String name, boolean writable) {
        ObjectNode a = obj().put("device", device);
        if (name != null) {
            a.put("name", name);
        }
        qmp.execute("nbd-server-add", a.put("writable", writable));
    }

    /** {@code nbd-server-remove}; {@code hard} drops connected clients at once. */
    public void nbdServerRemove(String name, boolean hard) {
        qmp.execute("nbd-server-remove", obj().put("name", name).put("mode", hard ? "hard" : "safe"));
    }

    /** {@code nbd-server-stop}. */
    public void nbdServerStop() {
        qmp.execute("nbd-server-stop", null);
    }

    /**
     * {@code block-export-add} of type nbd: exports {@code nodeName} under {@code name} (null:
     * the node name).
     */
    public void blockExportAdd(String id, String nodeName, String name, boolean writable) {
        ObjectNode a = obj().put("type", "nbd").put("id", id).put("node-name", nodeName);
        if (name != null) {
            a.put("name", name);
        }
        qmp.execute("block-export-add", a.put("writable", writable));
    }

    /**
     * {@code block-export-add} of type nbd offering pull-mode readers the meta contexts
     * {@code qemu:dirty-bitmap:NAME} for each of {@code bitmaps} (a {@link BitmapRef#local local}
     * name is looked up on the node and down its backing chain) and, with
     * {@code allocationDepth}, {@code qemu:allocation-depth}. The bitmaps stay busy while the
     * export exists; a recording one needs a writable export (or a read-only node).
     */
    public void blockExportAdd(String id, String nodeName, String name, boolean writable, List<BitmapRef> bitmaps,
                               boolean allocationDepth) {
        ObjectNode a = obj().put("type", "nbd").put("id", id).put("node-name", nodeName);
        if (name != null) {
            a.put("name", name);
        }
        a.put("writable", writable);
        if (!bitmaps.isEmpty()) {
            com.fasterxml.jackson.databind.node.ArrayNode list = a.putArray("bitmaps");
            for (BitmapRef b : bitmaps) {
                list.add(QmpConnection.MAPPER.valueToTree(b.toWire()));
            }
        }
        if (allocationDepth) {
            a.put("allocation-depth", true);
        }
        qmp.execute("block-export-add", a);
    }

    /** {@code block-export-add} with the full BlockExportOptions object. */
    public void blockExportAdd(JsonNode options) {
        qmp.execute("block-export-add", options);
    }

    /** {@code block-export-del}. */
    public void blockExportDel(String id, boolean hard) {
        qmp.execute("block-export-del", obj().put("id", id).put("mode", hard ? "hard" : "safe"));
    }

    /** {@code query-block-exports}. */
    public List<ExportInfo> queryBlockExports() {
        List<ExportInfo> out = new ArrayList<>();
        for (JsonNode n : qmp.execute("query-block-exports", null)) {
            out.add(ExportInfo.from(n));
        }
        return out;
    }

    private static ObjectNode obj() {
        return QmpConnection.MAPPER.createObjectNode();
    }
}
