package jblockd.commands;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.net.UnixDomainSocketAddress;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.TextNode;

import jblockd.block.BlockNode;
import jblockd.block.BlockStatus;
import jblockd.block.IoError;
import jblockd.block.NodeGraph;
import jblockd.block.NodeUser;
import jblockd.block.bitmap.BitmapException;
import jblockd.block.bitmap.BlockDirtyBitmap;
import jblockd.device.Device;
import jblockd.device.DrainedSection;
import jblockd.device.Devices;
import jblockd.device.GuestIo;
import jblockd.device.RunState;
import jblockd.nbd.proto.Nbd;
import jblockd.object.ObjectRegistry;
import jblockd.tls.ServerTls;
import jblockd.tls.X509Credentials;
import jblockd.nbd.server.NbdExport;
import jblockd.nbd.server.NbdServer;
import jblockd.qapi.ErrorClass;
import jblockd.qapi.QapiEvents;
import jblockd.qapi.QmpError;
import jblockd.qmp.CommandGroup;
import jblockd.qmp.CommandRegistry;

/**
 * block-export.json: the NBD server and its exports (QEMU 7.2 blockdev-nbd.c and
 * block/export/export.c, with their error texts). An export on a device goes through that
 * device (its policies, its current root: a filter a job inserts later is seen); one on a node
 * name gets an anonymous device (name "", policies report/report).
 */
public final class NbdCommands implements CommandGroup {

    /** nbd-server-start; {@code addr} is SocketAddressLegacy or, from the command line, SocketAddress. */
    public record NbdServerStart(JsonNode addr, String tlsCreds, String tlsAuthz, Long maxConnections) {
    }

    public record NbdServerAdd(String device, String name, String description, Boolean writable, String bitmap) {
    }

    public record NbdServerRemove(String name, String mode) {
    }

    /**
     * {@code device} is jblockd's addition (SPEC §1): export a device by name instead of a node.
     * {@code bitmaps}: each a name (searched on the node and down its chain) or
     * {@code {"node", "name"}} (the BlockDirtyBitmapOrStr alternate).
     */
    public record BlockExportAdd(String type, String id, String nodeName, Boolean writable, Boolean writethrough,
                                 String name, String description, String device, List<JsonNode> bitmaps,
                                 Boolean allocationDepth) {
        /** QEMU's members without the meta contexts (no {@code device}). */
        public BlockExportAdd(String type, String id, String nodeName, Boolean writable, Boolean writethrough,
                              String name, String description) {
            this(type, id, nodeName, writable, writethrough, name, description, null, null, null);
        }

        /** Without the meta contexts. */
        public BlockExportAdd(String type, String id, String nodeName, Boolean writable, Boolean writethrough,
                              String name, String description, String device) {
            this(type, id, nodeName, writable, writethrough, name, description, device, null, null);
        }
    }

    /** What an export offers besides base:allocation (BlockExportOptionsNbd's two members). */
    private record Contexts(List<JsonNode> bitmaps, boolean allocationDepth) {
        static final Contexts NONE = new Contexts(List.of(), false);
    }

    public record BlockExportDel(String id, String mode) {
    }

    private final NbdServer server;
    private final Devices devices;
    private final NodeGraph graph;
    private final RunState runState;
    private final QapiEvents events;
    private final ObjectRegistry objects;
    /** The tls-creds object the running server holds (released by nbd-server-stop). */
    private String tlsCredsInUse;
    /** Each export's BlockBackend in the graph, riding on its device. Guarded by this. */
    private final Map<NbdExport, NodeUser> exportUsers = new java.util.IdentityHashMap<>();

    public NbdCommands(NbdServer server, Devices devices, NodeGraph graph, RunState runState, QapiEvents events,
                       ObjectRegistry objects) {
        this.server = server;
        this.objects = objects;
        this.devices = devices;
        this.graph = graph;
        this.runState = runState;
        this.events = events;
    }

    @Override
    public void register(CommandRegistry r) {
        r.register("nbd-server-start", NbdServerStart.class, this::nbdServerStart);
        r.register("nbd-server-add", NbdServerAdd.class, this::nbdServerAdd);
        r.register("nbd-server-remove", NbdServerRemove.class, this::nbdServerRemove);
        r.register("nbd-server-stop", Void.class, a -> nbdServerStop());
        r.register("block-export-add", BlockExportAdd.class, this::blockExportAdd);
        r.register("block-export-del", BlockExportDel.class, this::blockExportDel);
        r.register("query-block-exports", Void.class, a -> queryBlockExports());
    }

    /**
     * The server's TLS: {@code creds} and, with {@code authzId}, the identity check. QEMU skips the
     * check when the credentials do not verify peers (no certificate to name), which would accept
     * every client while tls-authz says otherwise: refused here instead.
     */
    private ServerTls serverTls(X509Credentials creds, String authzId) throws QmpError {
        if (creds == null) {
            return null;
        }
        if (authzId == null) {
            return ServerTls.withoutAuthz(creds);
        }
        if (!creds.verifyPeer()) {
            throw QmpError.generic("'tls-authz' needs client certificates, but the TLS credentials have"
                    + " verify-peer=off");
        }
        return new ServerTls(creds, peer -> objects.authorize(authzId, peer));
    }

    /** blockdev-nbd.c nbd_server_start: already running, then the listener, then TLS. */
    synchronized Object nbdServerStart(NbdServerStart a) throws QmpError {
        if (server.running()) {
            throw QmpError.generic("NBD server already running");
        }
        SocketAddress address = socketAddress(a.addr());
        long max = a.maxConnections() == null ? 0 : a.maxConnections();
        if (max < 0 || max > 0xffffffffL) {
            throw QmpError.generic("Parameter 'max-connections' expects uint32");
        }
        if (address instanceof InetSocketAddress inet && inet.isUnresolved()) {
            throw QmpError.generic("address resolution failed for " + inet.getHostString() + ":" + inet.getPort()
                    + ": Name or service not known");
        }
        // QEMU resolves the credentials after binding; both are checked before anything listens here
        if (a.tlsAuthz() != null && a.tlsCreds() == null) {
            throw QmpError.generic("'tls-authz' is only supported when 'tls-creds' is set");
        }
        X509Credentials tls = a.tlsCreds() == null ? null
                : objects.retainTlsCreds(a.tlsCreds(), X509Credentials.Endpoint.SERVER);
        try {
            server.start(address, (int) Math.min(max, Integer.MAX_VALUE), serverTls(tls, a.tlsAuthz()));
        } catch (QmpError e) {
            objects.release(a.tlsCreds());
            throw e;
        } catch (IOException e) {
            if (tls != null) {
                objects.release(a.tlsCreds());
            }
            String where = address instanceof UnixDomainSocketAddress u ? " to " + u.getPath() : "";
            throw QmpError.generic("Failed to bind socket" + where + ": " + reason(e));
        }
        tlsCredsInUse = a.tlsCreds();
        return null;
    }

    private static String reason(IOException e) {
        String m = e.getMessage();
        return m == null ? e.toString() : m;
    }

    /**
     * SocketAddressLegacy {@code {"type": "inet", "data": {"host", "port"}}} or the flat
     * SocketAddress {@code {"type": "inet", "host", "port"}} (qemu-storage-daemon's --nbd-server).
     */
    static SocketAddress socketAddress(JsonNode addr) throws QmpError {
        if (addr == null || !addr.isObject()) {
            throw QmpError.generic("Invalid parameter type for 'addr', expected: object");
        }
        JsonNode type = addr.get("type");
        if (type == null || !type.isTextual()) {
            throw QmpError.generic("Parameter 'addr.type' is missing");
        }
        JsonNode data = addr.has("data") ? addr.get("data") : addr;
        String prefix = addr.has("data") ? "addr.data." : "addr.";
        switch (type.asText()) {
            case "inet" -> {
                String host = text(data, "host", prefix);
                String port = text(data, "port", prefix);
                int p;
                try {
                    p = Integer.parseInt(port);
                } catch (NumberFormatException e) {
                    throw QmpError.generic("Port '" + port + "' should be a number");
                }
                if (p < 0 || p > 65535) {
                    throw QmpError.generic("Port '" + port + "' out of range");
                }
                return new InetSocketAddress(host, p);
            }
            case "unix" -> {
                return UnixDomainSocketAddress.of(text(data, "path", prefix));
            }
            default -> throw QmpError.generic("Parameter 'addr.type' does not accept value '"
                    + type.asText() + "'");
        }
    }

    private static String text(JsonNode o, String member, String prefix) throws QmpError {
        JsonNode v = o.get(member);
        if (v == null || v.isNull()) {
            throw QmpError.generic("Parameter '" + prefix + member + "' is missing");
        }
        if (v.isNumber() && member.equals("port")) {
            return v.asText();
        }
        if (!v.isTextual()) {
            throw QmpError.generic("Invalid parameter type for '" + prefix + member + "', expected: string");
        }
        return v.asText();
    }

    /** qmp_nbd_server_add: lookup first, then block-export-add with id = name (blockdev-nbd.c). */
    Object nbdServerAdd(NbdServerAdd a) throws QmpError {
        Target t = target(a.device(), a.device());
        String name = a.name() != null ? a.name() : a.device();
        // nbd-server-add quietly exports a read-only device read-only (block-export-add refuses)
        boolean writable = Boolean.TRUE.equals(a.writable()) && !t.node().readOnly();
        // its one bitmap is block-export-add's bitmaps: [name] (qmp_nbd_server_add)
        Contexts contexts = a.bitmap() == null ? Contexts.NONE
                : new Contexts(List.of(TextNode.valueOf(a.bitmap())), false);
        add(name, name, a.description(), writable, false, t, contexts);
        return null;
    }

    /**
     * blk_exp_add (block/export/export.c) order: id syntax, duplicate id, node, read-only
     * check, then the NBD part: server running, name checks. QEMU looks the node up by node
     * name only ({@code device=''} in its error); we also accept a device name (SPEC §2).
     */
    Object blockExportAdd(BlockExportAdd a) throws QmpError {
        if (!"nbd".equals(a.type())) {
            throw QmpError.generic("Parameter 'type' does not accept value '" + a.type() + "'");
        }
        if (a.nodeName() == null && a.device() == null) {
            throw QmpError.generic("Parameter 'node-name' is missing");
        }
        if (a.nodeName() != null && a.device() != null) {
            throw QmpError.generic("Parameters 'node-name' and 'device' are mutually exclusive");
        }
        checkId(a.id());
        Target t;
        if (a.device() != null) {
            Device d = devices.get(a.device()).orElseThrow(() -> new QmpError(ErrorClass.DEVICE_NOT_FOUND,
                    "Device '" + a.device() + "' not found"));
            t = new Target(d, d.root(), false);
        } else {
            t = target("", a.nodeName());
        }
        boolean writable = Boolean.TRUE.equals(a.writable());
        if (writable && t.node().readOnly()) {
            throw QmpError.generic("Cannot export read-only node as writable");
        }
        String name = a.name() != null ? a.name() : a.nodeName() != null ? a.nodeName() : a.device();
        Contexts contexts = new Contexts(a.bitmaps() == null ? List.of() : a.bitmaps(),
                Boolean.TRUE.equals(a.allocationDepth()));
        add(a.id(), name, a.description(), writable, Boolean.TRUE.equals(a.writethrough()), t, contexts);
        return null;
    }

    private void checkId(String id) throws QmpError {
        if (!wellFormed(id)) {
            throw QmpError.generic("Invalid block export id");
        }
        if (exportById(id).isPresent()) {
            throw QmpError.generic("Block export id '" + id + "' is already in use");
        }
    }

    /** QEMU's id_wellformed(): a letter, then letters, digits, '-', '.', '_'. */
    static boolean wellFormed(String id) {
        if (id.isEmpty() || !isAsciiLetter(id.charAt(0))) {
            return false;
        }
        for (int i = 1; i < id.length(); i++) {
            char c = id.charAt(i);
            if (!isAsciiLetter(c) && !(c >= '0' && c <= '9') && "-._".indexOf(c) < 0) {
                return false;
            }
        }
        return true;
    }

    private static boolean isAsciiLetter(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    }

    /** The device (named or anonymous) and node an export is made on. */
    private record Target(Device device, BlockNode node, boolean anonymous) {
    }

    /** {@code shownDevice} is what QEMU's bdrv_lookup_bs() error shows as {@code device=''}. */
    private Target target(String shownDevice, String deviceOrNode) throws QmpError {
        Optional<Device> d = devices.get(deviceOrNode);
        if (d.isPresent()) {
            return new Target(d.get(), d.get().root(), false);
        }
        Optional<BlockNode> n = graph.node(deviceOrNode);
        if (n.isEmpty()) {
            throw QmpError.generic("Cannot find device='" + shownDevice + "' nor node-name='" + deviceOrNode + "'");
        }
        return new Target(GuestIo.anonymousDevice(n.get()), n.get(), true);
    }

    /**
     * {@code writethrough}: the export's write cache is off (block/export/export.c
     * blk_set_enable_write_cache(blk, !writethrough)): every write through it is durable before
     * its reply, whatever the device's cache mode.
     */
    private synchronized void add(String id, String name, String description, boolean writable,
                                  boolean writethrough, Target t, Contexts contexts) throws QmpError {
        checkId(id);
        // nbd_export_create (nbd/server.c)
        if (!server.running()) {
            throw QmpError.generic("NBD server not running");
        }
        if (name.length() > Nbd.MAX_STRING_SIZE) {
            throw QmpError.generic("export name '" + name + "' too long");
        }
        if (description != null && description.length() > Nbd.MAX_STRING_SIZE) {
            throw QmpError.generic("description '" + description + "' too long");
        }
        if (server.export(name).isPresent()) {
            throw QmpError.generic("NBD server already has export named '" + name + "'");
        }
        // blk_exp_add(): the export's BlockBackend goes onto the node, checked like any user
        NodeUser user = NodeUser.export(writable);
        try {
            devices.attachUser(t.device(), user);
        } catch (IoError ex) {
            throw QmpError.generic(ex.getMessage());
        }
        List<BlockDirtyBitmap> bitmaps;
        try {
            bitmaps = exportBitmaps(contexts.bitmaps(), t.node(), !writable);
        } catch (QmpError ex) {
            devices.detachUser(t.device(), user);
            throw ex;
        }
        // nbd_export_create marks them busy once all passed; they stay busy for the export's life
        setBusy(bitmaps, true);
        // The anonymous device is known before the export serves its first request, so a job
        // inserting a filter above the node meanwhile re-points it too (Devices.attachedTo):
        // no request of the export can go past a filter that its user record was checked
        // against. The addition itself is a graph change like any other: drained.
        NbdExport e;
        try (DrainedSection s = devices.drain(t.node())) {
            if (t.anonymous()) {
                devices.addAnonymous(t.device());
            }
            try {
                e = new NbdExport(id, name, description, writable,
                        new GuestIo(t.device(), runState, events, writethrough), contexts.allocationDepth(), bitmaps);
                server.addExport(e);
            } catch (IOException ex) {
                setBusy(bitmaps, false);
                undoAdd(t, user);
                throw QmpError.generic("Failed to get size of export '" + name + "': " + reason(ex));
            } catch (IllegalArgumentException ex) {
                setBusy(bitmaps, false);
                undoAdd(t, user);
                throw QmpError.generic(ex.getMessage());
            }
        }
        exportUsers.put(e, user);
    }

    /**
     * nbd_export_create's bitmap loop (nbd/server.c, QEMU 7.2), each entry in turn:
     * <ul>
     *   <li>a name is looked up on the exported node, then down its filter/backing chain
     *   (bdrv_filter_or_cow_bs): {@code Bitmap 'x' is not found}; a read-only export refuses
     *   such a bitmap when it is enabled and its node is writable (it would keep changing under
     *   the reader): {@code Enabled bitmap 'x' incompatible with readonly export};</li>
     *   <li>{@code {node, name}} is looked up as every bitmap command does
     *   (block_dirty_bitmap_lookup: {@code Node 'n' not found}, {@code Dirty bitmap 'x' not
     *   found}) and is exported even when enabled (QEMU applies the rule above to names
     *   only);</li>
     *   <li>then either must be usable read-only: not busy, not inconsistent
     *   (BDRV_BITMAP_ALLOW_RO).</li>
     * </ul>
     */
    private List<BlockDirtyBitmap> exportBitmaps(List<JsonNode> specs, BlockNode exported, boolean readonly)
            throws QmpError {
        List<BlockDirtyBitmap> out = new ArrayList<>();
        for (JsonNode spec : specs) {
            BlockDirtyBitmap bm;
            if (spec.isTextual()) {
                String bitmap = spec.asText();
                bm = null;
                BlockNode holder = exported;
                for (BlockNode n = exported; n != null; n = BlockStatus.next(n)) {
                    Optional<BlockDirtyBitmap> found = n.bitmaps().find(bitmap);
                    if (found.isPresent()) {
                        bm = found.get();
                        holder = n;
                        break;
                    }
                }
                if (bm == null) {
                    throw QmpError.generic("Bitmap '" + bitmap + "' is not found");
                }
                if (readonly && !holder.readOnly() && bm.enabled()) {
                    throw QmpError.generic("Enabled bitmap '" + bitmap + "' incompatible with readonly export");
                }
            } else {
                String node = spec.get("node").asText();
                String bitmap = spec.get("name").asText();
                BlockNode n = devices.lookupNode(node).orElseThrow(() ->
                        QmpError.generic("Node '" + node + "' not found"));
                bm = n.bitmaps().find(bitmap).orElseThrow(() ->
                        QmpError.generic("Dirty bitmap '" + bitmap + "' not found"));
            }
            try {
                bm.check(BlockDirtyBitmap.Check.ALLOW_RO);
            } catch (BitmapException ex) {
                throw QmpError.generic(ex.getMessage());
            }
            out.add(bm);
        }
        return out;
    }

    private static void setBusy(List<BlockDirtyBitmap> bitmaps, boolean busy) {
        for (BlockDirtyBitmap b : bitmaps) {
            b.owner().setBusy(b, busy);
        }
    }

    private void undoAdd(Target t, NodeUser user) {
        if (t.anonymous()) {
            devices.removeAnonymous(t.device());
        }
        devices.detachUser(t.device(), user);
    }

    /** Drops what {@link #add} recorded for an export that is gone. */
    private void forget(NbdExport e) {
        Device d = e.io().device();
        NodeUser user = exportUsers.remove(e);
        if (user != null) {
            devices.detachUser(d, user);
        }
        // nbd_export_delete: the exported bitmaps are free again
        setBusy(e.bitmaps(), false);
        if (d.name().isEmpty()) {
            devices.removeAnonymous(d);
        }
        // blk_exp_unref() -> blk_exp_delete_bh(): once nothing of the export is left
        events.blockExportDeleted(e.id());
    }

    private Optional<NbdExport> exportById(String id) {
        return server.exports().stream().filter(e -> e.id().equals(id)).findFirst();
    }

    /** qmp_nbd_server_remove: block-export-del on the export whose id is the name. */
    Object nbdServerRemove(NbdServerRemove a) throws QmpError {
        return blockExportDel(new BlockExportDel(a.name(), a.mode()));
    }

    synchronized Object blockExportDel(BlockExportDel a) throws QmpError {
        NbdExport e = exportById(a.id()).orElseThrow(() -> QmpError.generic("Export '" + a.id() + "' is not found"));
        if (e.shuttingDown()) {
            throw QmpError.generic("Export '" + a.id() + "' is already shutting down");
        }
        boolean hard = "hard".equals(a.mode());
        if (a.mode() != null && !hard && !"safe".equals(a.mode())) {
            throw QmpError.generic("Parameter 'mode' does not accept value '" + a.mode() + "'");
        }
        if (!hard && clientsStaying(e) > 0) {
            throw QmpError.generic("export '" + a.id() + "' still in use");
        }
        server.removeExport(e, hard);
        forget(e);
        return null;
    }

    /** Clients of {@code e} once those that already hung up have gone (up to a second, see NbdServer). */
    private int clientsStaying(NbdExport e) throws QmpError {
        try {
            return server.clientCountAfter(e, java.time.Duration.ofSeconds(1));
        } catch (InterruptedException ie) {
            Thread.currentThread().interrupt();
            throw QmpError.generic("interrupted");
        }
    }

    synchronized Object nbdServerStop() throws QmpError {
        if (!server.running()) {
            throw QmpError.generic("NBD server not running");
        }
        List<NbdExport> all = server.exports();
        server.stop();
        if (tlsCredsInUse != null) {
            objects.release(tlsCredsInUse);
            tlsCredsInUse = null;
        }
        for (NbdExport e : all) {
            forget(e);
        }
        return null;
    }

    List<Map<String, Object>> queryBlockExports() {
        List<Map<String, Object>> out = new ArrayList<>();
        for (NbdExport e : server.exports()) {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("type", "nbd");
            m.put("id", e.id());
            m.put("node-name", e.io().root().nodeName());
            m.put("shutting-down", e.shuttingDown());
            out.add(m);
        }
        return out;
    }
}
