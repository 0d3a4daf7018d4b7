package jblockd.commands;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import jblockd.block.BlockChild;
import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.BlockdevRef;
import jblockd.block.IoError;
import jblockd.block.NodeGraph;
import jblockd.block.NodeUser;
import jblockd.device.DrainedSection;
import jblockd.device.Devices;
import jblockd.qapi.QmpError;
import jblockd.qmp.CommandGroup;
import jblockd.qmp.CommandRegistry;

/**
 * {@code blockdev-reopen} and {@code change-backing-file} (QEMU 7.2 blockdev.c
 * qmp_blockdev_reopen, qmp_change_backing_file). This class holds QEMU's rules on which options a
 * reopen may change (block.c bdrv_reopen_queue_child, bdrv_reopen_prepare and the drivers'
 * reopen_prepare, as observed on qemu-storage-daemon 7.2); {@link NodeGraph#reopen} checks the
 * permissions of the state after and switches the drivers, all nodes or none.
 * <p>
 * blockdev-reopen takes each node's whole option set: an option left out goes back to its
 * default ({@code read-only} off, {@code discard} ignore, no cache flags), except where QEMU
 * keeps it: a child given by reference to the child it already has keeps its options and takes
 * the parent's {@code read-only} (a child the parent opened inline inherits it; a node added on
 * its own is not reopened with its parent).
 */
public final class ReopenCommands implements CommandGroup {

    private final NodeGraph graph;
    private final Devices devices;

    public ReopenCommands(NodeGraph graph, Devices devices) {
        this.graph = graph;
        this.devices = devices;
    }

    @Override
    public void register(CommandRegistry r) {
        r.register("blockdev-reopen", ObjectNode.class, this::blockdevReopen);
        r.register("change-backing-file", ChangeBackingFile.class, this::changeBackingFile);
    }

    // ------------------------------------------------------------------ blockdev-reopen

    private Object blockdevReopen(ObjectNode args) throws QmpError {
        JsonNode list = args.get("options");
        // QEMU looks every node up before it prepares any (qmp_blockdev_reopen's queue loop)
        List<BlockNode> tops = new ArrayList<>();
        for (JsonNode o : list) {
            if (!o.has("node-name")) {
                throw QmpError.generic("node-name not specified");
            }
            String name = o.get("node-name").asText();
            tops.add(graph.node(name).orElseThrow(
                    () -> QmpError.generic("Failed to find node with node-name='" + name + "'")));
        }
        List<NodeGraph.ReopenRequest> requests = new ArrayList<>();
        for (int i = 0; i < tops.size(); i++) {
            JsonNode o = list.get(i);
            if (tops.get(i).autoNamed()) {
                // a generated name was not among the node's options (and the codec would call it invalid)
                throw cannotChange("node-name");
            }
            if (o.has("force-share")) {
                // before the codec's own check: QEMU's reopen compares it with the old options
                throw cannotChange("force-share");
            }
            BlockdevOptions decoded = BlockdevOptionsCodec.decode(o);
            try {
                plan(tops.get(i), o, decoded, false, requests);
            } catch (IoError e) {
                throw QmpError.generic(e.getMessage());
            }
        }
        run(requests, tops);
        return null;
    }

    private void run(List<NodeGraph.ReopenRequest> requests, List<BlockNode> tops) throws QmpError {
        try (DrainedSection s = devices.drain(tops.toArray(BlockNode[]::new))) {
            graph.reopen(requests);
        } catch (IOException e) {
            throw QmpError.generic(e.getMessage());
        }
    }

    /**
     * Adds the request for {@code node} from its new options {@code json} (decoded: the same,
     * with inherited cache and discard options applied), then those for the children it
     * reopens. {@code inheritedReadOnly}: the {@code read-only} an omitted one means (false at
     * the top, the parent's for a file child, true for a backing child).
     */
    private void plan(BlockNode node, JsonNode json, BlockdevOptions decoded, boolean inheritedReadOnly,
                      List<NodeGraph.ReopenRequest> out) throws IoError, QmpError {
        BlockdevOptions current = graph.currentOptions(node); // refuses drivers that cannot reopen
        BlockdevOptions opened = node.opened().options();
        // bdrv_reopen_prepare looks the backing, then the file reference up before it compares
        // the remaining options (the driver among them)
        for (String role : List.of("backing", "file")) {
            JsonNode ref = json.get(role);
            if (ref != null && ref.isTextual() && graph.node(ref.asText()).isEmpty()) {
                throw new IoError(jblockd.block.Errno.ENOENT, "Cannot find device='' nor node-name='"
                        + ref.asText() + "'");
            }
        }
        if (!decoded.driver().equals(current.driver())) {
            throw cannotChange("driver");
        }
        if (json.has("node-name") && (node.autoNamed() || !json.get("node-name").asText().equals(node.nodeName()))) {
            throw cannotChange("node-name");
        }
        if (json.has("force-share")) {
            // not kept by jblockd's nodes: QEMU refuses it unless the node was added with the same
            throw cannotChange("force-share");
        }
        boolean readOnly = json.has("read-only") ? json.get("read-only").asBoolean() : inheritedReadOnly;
        BlockdevOptions.Common c = new BlockdevOptions.Common(node.nodeName(), readOnly,
                decoded.common().cacheDirect(), decoded.common().cacheNoFlush(), decoded.common().discardUnmap());
        BlockdevOptions next = switch (decoded) {
            case BlockdevOptions.File f -> {
                if (!f.filename().equals(((BlockdevOptions.File) current).filename())) {
                    throw cannotChange("filename");
                }
                if (f.locking() != ((BlockdevOptions.File) current).locking()) {
                    throw cannotChange("locking");
                }
                yield f.withCommon(c);
            }
            case BlockdevOptions.NullCo n -> {
                BlockdevOptions.NullCo old = (BlockdevOptions.NullCo) opened;
                if (n.sizeGiven() && (!old.sizeGiven() || old.size() != n.size())) {
                    throw cannotChange("size");
                }
                if (n.readZeroesGiven() && (!old.readZeroesGiven() || old.readZeroes() != n.readZeroes())) {
                    throw cannotChange("read-zeroes");
                }
                if (json.has("latency-ns")) {
                    throw cannotChange("latency-ns");
                }
                yield new BlockdevOptions.NullCo(c, old.size(), old.readZeroes(), old.sizeGiven(),
                        old.readZeroesGiven());
            }
            case BlockdevOptions.Raw r -> new BlockdevOptions.Raw(c,
                    child(node, "file", json.get("file"), r.file(), readOnly, out), r.offset(), r.size());
            case BlockdevOptions.Qcow2 q -> {
                if (!q.runtime().equals(((BlockdevOptions.Qcow2) opened).runtime())) {
                    // QEMU can; jblockd sizes its caches once, at open
                    throw QmpError.generic("jblockd cannot change a qcow2 node's runtime options (cache sizes,"
                            + " cache-clean-interval, pass-discard-*) by reopen");
                }
                yield new BlockdevOptions.Qcow2(c, child(node, "file", json.get("file"), q.file(), readOnly, out),
                        backing(node, json, q.backing(), out), q.runtime());
            }
            case BlockdevOptions.Blkdebug b -> throw new IllegalStateException("not reopenable: " + b);
            case BlockdevOptions.CopyBeforeWrite w -> throw new IllegalStateException("not reopenable: " + w);
            case BlockdevOptions.SnapshotAccess a -> throw new IllegalStateException("not reopenable: " + a);
            case BlockdevOptions.Nbd n -> throw new IllegalStateException("not reopenable: " + n);
            case BlockdevOptions.Rbd r -> throw new IllegalStateException("not reopenable: " + r);
        };
        out.add(new NodeGraph.ReopenRequest(node, next));
    }

    /**
     * The {@code file} child (bdrv_reopen_queue_child's child loop): a reference must name the
     * current child, which a parent that opened it inline reopens with its old options and the
     * parent's read-only state; new inline options are only for a child the parent opened.
     */
    private BlockdevRef child(BlockNode node, String role, JsonNode json, BlockdevRef decoded, boolean parentReadOnly,
                              List<NodeGraph.ReopenRequest> out) throws IoError, QmpError {
        BlockNode cur = childOf(node, role);
        if (cur == null) {
            throw cannotChange(role);
        }
        boolean implicit = !graph.monitorOwned(cur);
        if (json.isTextual()) {
            if (graph.node(json.asText()).isEmpty()) {
                throw new IoError(jblockd.block.Errno.ENOENT, "Cannot find device='' nor node-name='"
                        + json.asText() + "'");
            }
            if (!json.asText().equals(cur.nodeName())) {
                throw cannotChange(role);
            }
            if (implicit) {
                BlockdevOptions keep = withReadOnly(graph.currentOptions(cur), parentReadOnly);
                out.add(new NodeGraph.ReopenRequest(cur, keep));
            }
        } else {
            if (!implicit) {
                throw cannotChange(role + ".driver");
            }
            plan(cur, json, ((BlockdevRef.Inline) decoded).options(), parentReadOnly, out);
        }
        return new BlockdevRef.Reference(cur.nodeName());
    }

    /**
     * qcow2's {@code backing} (bdrv_reopen_prepare, bdrv_reopen_parse_file_or_backing): left out
     * it must have none ("backing is missing for 'x'"), null drops it, a node name points the
     * node at that node (the graph checks for cycles), inline options only reopen the backing
     * the node opened itself, read-only unless told otherwise.
     */
    private BlockdevRef backing(BlockNode node, JsonNode json, BlockdevRef decoded, List<NodeGraph.ReopenRequest> out)
            throws IoError, QmpError {
        BlockNode cur = node.driver().backing();
        JsonNode b = json.get("backing");
        if (b == null) {
            if (cur != null || node.driver().backingHeader().isPresent()) {
                throw QmpError.generic("backing is missing for '" + node.nodeName() + "'");
            }
            return new BlockdevRef.None();
        }
        if (b.isNull()) {
            return new BlockdevRef.None();
        }
        if (b.isTextual()) {
            return new BlockdevRef.Reference(b.asText());
        }
        if (cur == null || graph.monitorOwned(cur)) {
            throw cannotChange("backing.driver");
        }
        plan(cur, b, ((BlockdevRef.Inline) decoded).options(), true, out);
        return new BlockdevRef.Reference(cur.nodeName());
    }

    private static BlockNode childOf(BlockNode node, String role) {
        for (BlockChild c : node.driver().children()) {
            if (c.role().equals(role)) {
                return c.node();
            }
        }
        return null;
    }

    private static BlockdevOptions withReadOnly(BlockdevOptions o, boolean readOnly) {
        BlockdevOptions.Common c = o.common().withReadOnly(readOnly);
        return switch (o) {
            case BlockdevOptions.File f -> f.withCommon(c);
            case BlockdevOptions.Raw r -> new BlockdevOptions.Raw(c, r.file(), r.offset(), r.size());
            case BlockdevOptions.Qcow2 q -> new BlockdevOptions.Qcow2(c, q.file(), q.backing(), q.runtime());
            case BlockdevOptions.NullCo n -> new BlockdevOptions.NullCo(c, n.size(), n.readZeroes(), n.sizeGiven(),
                    n.readZeroesGiven());
            case BlockdevOptions.Blkdebug b -> throw new IllegalStateException("not reopenable: " + b);
            case BlockdevOptions.CopyBeforeWrite w -> throw new IllegalStateException("not reopenable: " + w);
            case BlockdevOptions.SnapshotAccess a -> throw new IllegalStateException("not reopenable: " + a);
            case BlockdevOptions.Nbd n -> throw new IllegalStateException("not reopenable: " + n);
            case BlockdevOptions.Rbd r -> throw new IllegalStateException("not reopenable: " + r);
        };
    }

    private static QmpError cannotChange(String option) {
        return QmpError.generic("Cannot change the option '" + option + "'");
    }

    /**
     * The requests of QEMU's bdrv_reopen_set_read_only(): the node with its options kept and
     * {@code read-only} set, and the children it opened inline following it.
     */
    private List<NodeGraph.ReopenRequest> readOnlyRequests(BlockNode node, boolean readOnly) throws IoError {
        List<NodeGraph.ReopenRequest> out = new ArrayList<>();
        out.add(new NodeGraph.ReopenRequest(node, withReadOnly(graph.currentOptions(node), readOnly)));
        BlockNode file = childOf(node, "file");
        if (file != null && !graph.monitorOwned(file)) {
            out.add(new NodeGraph.ReopenRequest(file, withReadOnly(graph.currentOptions(file), readOnly)));
        }
        return out;
    }

    /**
     * Makes {@code node} read-only as the snapshot commands do after the overlay went on top
     * (external_snapshot_commit: bdrv_reopen_set_read_only(old top, true, NULL)): best effort,
     * a refusal (someone still writes it) leaves it writable, silently as in QEMU.
     */
    public void makeReadOnlyQuietly(BlockNode node) {
        try {
            setReadOnly(node, true);
        } catch (QmpError e) {
            // QEMU passes NULL for errp: the old top simply stays writable
        }
    }

    /**
     * block.c bdrv_reopen_set_read_only(): reopens {@code node} (and the file child it opened
     * inline) read-only or read-write, its other options kept, in a drained section; nothing
     * when it already is. The one way a job or command flips a node's read-only state (commit
     * makes its base writable so the base node itself is written, never a second opening of the
     * image behind it, whose metadata the node's cache would not see).
     */
    public void setReadOnly(BlockNode node, boolean readOnly) throws QmpError {
        if (node.readOnly() == readOnly) {
            return;
        }
        try {
            run(readOnlyRequests(node, readOnly), List.of(node));
        } catch (IoError e) {
            throw QmpError.generic(e.getMessage());
        }
    }

    // ------------------------------------------------------------------ change-backing-file

    /** change-backing-file's arguments (qapi/block-core.json). */
    public record ChangeBackingFile(String device, String imageNodeName, String backingFile) {
    }

    private Object changeBackingFile(ChangeBackingFile args) throws QmpError {
        String device = args.device();
        String imageName = args.imageNodeName();
        String backingFile = args.backingFile();
        // qmp_get_root_bs(): a device or node name whose node has no parent node
        BlockNode bs = devices.lookupNode(device).orElseThrow(() -> QmpError.generic(
                "Cannot find device='" + device + "' nor node-name='" + device + "'"));
        for (NodeUser u : graph.usersOf(bs)) {
            if (u.kind() == NodeUser.Kind.PARENT) {
                throw QmpError.generic("Need a root block node");
            }
        }
        BlockNode image = graph.node(imageName).orElseThrow(() -> QmpError.generic(
                "Cannot find device='' nor node-name='" + imageName + "'"));
        if (image.driver().backing() == null && image.driver().filtered() == null) {
            throw QmpError.generic("not allowing backing file change on an image without a backing file");
        }
        Optional<NodeUser> blocker = graph.blockerOf(bs);
        if (blocker.isPresent()) {
            throw QmpError.generic("Node '" + device + "' is busy: " + blocker.get().blocker());
        }
        if (!chainContains(bs, image)) {
            throw QmpError.generic("'" + device + "' and image file are not in the same chain");
        }
        boolean ro = image.readOnly();
        if (ro) {
            setReadOnly(image, false);
        }
        QmpError failure = null;
        try (DrainedSection s = devices.drain(image)) {
            image.driver().setBacking(image.driver().backing(), backingFile, image.driver().formatName());
        } catch (IoError e) {
            failure = QmpError.generic("Could not change backing file to '" + backingFile + "': "
                    + e.errno().strerror());
        } catch (IOException e) {
            failure = QmpError.generic("Could not change backing file to '" + backingFile + "': " + e.getMessage());
        }
        if (ro) {
            try {
                setReadOnly(image, true);
            } catch (QmpError e) {
                if (failure == null) {
                    failure = e;
                }
            }
        }
        if (failure != null) {
            throw failure;
        }
        return null;
    }

    /** bdrv_chain_contains(): {@code image} is {@code top} or below it through backing and filter links. */
    private static boolean chainContains(BlockNode top, BlockNode image) {
        for (BlockNode n = top; n != null;
                n = n.driver().filtered() != null ? n.driver().filtered() : n.driver().backing()) {
            if (n == image) {
                return true;
            }
        }
        return false;
    }
}
