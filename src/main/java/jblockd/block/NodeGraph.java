package jblockd.block;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Comparator;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The block graph of one daemon: every named node, and who uses it. Nodes come in through
 * {@link #add(BlockdevOptions)} (blockdev-add, --blockdev, --drive) or as backing files opened by
 * format drivers; each gets a name, generated ({@code #block123}) when absent.
 * <p>
 * Graph changes (add, remove, replace) are serialised on this object; I/O never takes its lock.
 */
public final class NodeGraph {
    private final DriverRegistry drivers;
    private final Filenames filenames;
    private final LinkedHashMap<String, BlockNode> nodes = new LinkedHashMap<>();
    /** Users other than parent links, newest first: devices, exports, jobs. Guarded by this. */
    private final Map<BlockNode, List<NodeUser>> users = new HashMap<>();
    private final AtomicInteger autoNames = new AtomicInteger(100);
    /**
     * When each node got its name in QEMU's terms (block.c bdrv_assign_node_name() order), for
     * query-named-block-nodes' order. Guarded by this.
     */
    private final Map<BlockNode, Long> namedAt = new HashMap<>();
    /**
     * Nodes the monitor owns (blockdev-add, --blockdev: QEMU's monitor_bdrv_states): they stay
     * until blockdev-del. Every other node (a --drive chain, an inline child, a backing file, a
     * job's target) goes with its last user.
     */
    private final java.util.Set<BlockNode> monitorOwned = java.util.Collections.newSetFromMap(new java.util.IdentityHashMap<>());
    private long namingClock;
    private volatile ObjectLookup tls = ObjectLookup.NONE;

    /** A graph whose filenames cannot be {@code json:} (tools without the QMP option codec). */
    public NodeGraph(DriverRegistry drivers) {
        this(drivers, Filenames.NO_JSON);
    }

    /** {@code json}: how {@code json:} filenames become options (the daemon's QMP codec). */
    public NodeGraph(DriverRegistry drivers, Filenames.JsonOptions json) {
        this.drivers = drivers;
        this.filenames = new Filenames(drivers, json);
    }

    public DriverRegistry drivers() {
        return drivers;
    }

    /**
     * Opens a node and its inline children. On failure every node opened by this call is closed
     * and unregistered again, so nothing is half-added.
     */
    public synchronized BlockNode add(BlockdevOptions options) throws IOException {
        List<BlockNode> opened = new ArrayList<>();
        try {
            return open(options, opened);
        } catch (IOException | RuntimeException e) {
            for (int i = opened.size() - 1; i >= 0; i--) {
                BlockNode n = opened.get(i);
                nodes.remove(n.nodeName());
                namedAt.remove(n);
                try {
                    n.close();
                } catch (IOException ignored) {
                    // already failing; the first error is the one to report
                }
            }
            throw e;
        }
    }

    private BlockNode open(BlockdevOptions options, List<BlockNode> opened) throws IOException {
        String name = options.common().nodeName();
        if (name != null && nodes.containsKey(name)) {
            throw new IoError(Errno.EINVAL, "Duplicate nodes with node-name='" + name + "'");
        }
        DriverFactory<BlockdevOptions> factory = drivers.factory(options.driver());
        if (factory == null) {
            throw new IoError(Errno.EINVAL, "Unknown driver '" + options.driver() + "'");
        }
        // QEMU names a format node after its file child is open (bdrv_open_inherit opens "file"
        // first) but before any other child (backing; a protocol filter's image): the first
        // non-file child request marks the moment, else the end of the open.
        long[] named = {-1};
        OpenContext ctx = new OpenContext() {
            @Override
            public BlockNode child(BlockdevRef ref, String role, boolean readOnly) throws IOException {
                if (!"file".equals(role) && named[0] < 0) {
                    named[0] = namingClock++;
                }
                return switch (ref) {
                    case BlockdevRef.Reference r -> {
                        BlockNode n = nodes.get(r.nodeName());
                        if (n == null) {
                            throw new IoError(Errno.ENOENT, "Cannot find device='" + r.nodeName()
                                    + "' nor node-name='" + r.nodeName() + "'");
                        }
                        yield n;
                    }
                    case BlockdevRef.Inline i -> open(withReadOnly(i.options(), readOnly), opened);
                    case BlockdevRef.None none -> null;
                };
            }

            @Override
            public Optional<BlockNode> node(String nodeName) {
                return Optional.ofNullable(nodes.get(nodeName));
            }

            @Override
            public ObjectLookup objects() {
                return tls;
            }

            @Override
            public BlockNode openBackingImage(String filename, String format, boolean readOnly)
                    throws IOException {
                if (named[0] < 0) {
                    named[0] = namingClock++;
                }
                try {
                    // block.c bdrv_backing_options: a backing file inherits the parent's
                    // cache.direct and cache.no-flush (QSD 7.2's query-named-block-nodes shows them)
                    BlockdevOptions.Common parent = options.common();
                    return open(imageOptions(filename, format, readOnly, parent.cacheDirect(), parent.cacheNoFlush(),
                            null, false), opened);
                } catch (IoError e) {
                    // block.c bdrv_open_backing_file: the cause, introduced as QEMU does
                    throw new IoError(e.errno(), "Could not open backing file: " + e.getMessage(), e);
                }
            }
        };
        BlockDriver driver = factory.open(options, ctx);
        boolean auto = name == null;
        BlockNode node;
        try {
            node = new BlockNode(auto ? nextAutoName() : name, auto, driver, options.common().readOnly(),
                    options.common().discardUnmap(), options);
        } catch (java.io.UncheckedIOException e) {
            // the node could not load its persistent bitmaps: the open fails, the driver goes
            try {
                driver.close();
            } catch (IOException ignored) {
                // the load error is the one to report
            }
            throw e.getCause();
        }
        try {
            linkChildren(node);
        } catch (IoError e) {
            node.close();
            throw e;
        }
        namedAt.put(node, named[0] < 0 ? namingClock++ : named[0]);
        opened.add(node);
        return node;
    }

    /**
     * Registers a new node, whose links to its children take what its driver needs on each
     * even with no user yet (a read-write qcow2 writes metadata and shares no writer, also
     * when read-only): checked like any new user (bdrv_attach_child -> bdrv_refresh_perms)
     * on the children and below, and a child that cannot be written refuses a writing link.
     * A child opened by another command (blockdev-add with {@code "file": "node"}) may already
     * have users that the link conflicts with.
     */
    private void linkChildren(BlockNode node) throws IoError {
        List<BlockNode> below = new ArrayList<>();
        for (BlockChild c : node.driver().children()) {
            if (c.node() != null) {
                checkWritable(c.node(), node.driver().childAccess(c, !node.readOnly(), Access.PASSIVE));
                for (BlockNode n : subtree(c.node())) {
                    if (!below.contains(n)) {
                        below.add(n);
                    }
                }
            }
        }
        Map<BlockNode, Boolean> conflictedBefore = new HashMap<>();
        for (BlockNode n : below) {
            conflictedBefore.put(n, conflict(n, usersOf(n, users)).isPresent());
        }
        nodes.put(node.nodeName(), node);
        for (BlockNode n : below) {
            Optional<String> conflict = conflict(n, usersOf(n, users));
            if (conflict.isPresent() && !conflictedBefore.get(n)) {
                nodes.remove(node.nodeName());
                throw new IoError(Errno.EPERM, conflict.get());
            }
        }
        try {
            applyPermissions();
        } catch (IoError e) {
            nodes.remove(node.nodeName());
            applyPermissionsReleasing();
            throw e;
        }
    }

    /**
     * Hands every node its users' combined use ({@link BlockDriver#applyPermissions}: the
     * file driver's image locks), after each change of users or links, as QEMU's
     * bdrv_refresh_perms ends in the drivers' bdrv_set_perm.
     */
    private void applyPermissions() throws IoError {
        for (Map.Entry<BlockNode, Access> e : lockUses().entrySet()) {
            e.getKey().driver().applyPermissions(e.getValue());
        }
    }

    /** After a change that only drops uses (a user or link gone): nothing can conflict. */
    private void applyPermissionsReleasing() {
        for (Map.Entry<BlockNode, Access> e : lockUses().entrySet()) {
            try {
                e.getKey().driver().applyPermissions(e.getValue());
            } catch (IoError ignored) {
                // releasing lock bytes cannot conflict; a node whose unlock failed keeps them
                // until it is closed, which releases them with its file
            }
        }
    }

    /**
     * The use each node announces to other processes. jblockd itself opens one image through
     * several nodes (a commit's base writer, a mirror target's backing named by file): the
     * graph already rules on those, and they must not lock each other out, so the nodes of one
     * image ({@link BlockDriver#storageKey}) announce their uses together through the first
     * of them; the others announce nothing.
     */
    private Map<BlockNode, Access> lockUses() {
        Map<BlockNode, Access> out = new java.util.LinkedHashMap<>();
        Map<Object, BlockNode> holders = new HashMap<>();
        for (BlockNode n : nodes.values()) {
            Access use = combined(usersOf(n, users));
            Object key = n.driver().storageKey();
            BlockNode holder = key == null ? null : holders.putIfAbsent(key, n);
            if (holder == null) {
                out.put(n, use);
            } else {
                Access held = out.get(holder);
                Set<Perm> needs = Perm.none();
                needs.addAll(held.needs());
                needs.addAll(use.needs());
                Set<Perm> shares = Perm.none();
                shares.addAll(held.shares());
                shares.retainAll(use.shares());
                out.put(holder, new Access(needs, shares));
                out.put(n, Access.PASSIVE);
            }
        }
        return out;
    }

    private static BlockdevOptions withReadOnly(BlockdevOptions o, boolean readOnly) {
        if (!readOnly || o.common().readOnly()) {
            return o;
        }
        return withCommon(o, o.common().withReadOnly(true));
    }

    private static BlockdevOptions withCommon(BlockdevOptions o, BlockdevOptions.Common c) {
        return switch (o) {
            case BlockdevOptions.File f -> f.withCommon(c);
            case BlockdevOptions.Raw r -> new BlockdevOptions.Raw(c, r.file(), r.offset(), r.size());
            case BlockdevOptions.Qcow2 q -> new BlockdevOptions.Qcow2(c, q.file(), q.backing(), q.runtime());
            case BlockdevOptions.Blkdebug b -> new BlockdevOptions.Blkdebug(c, b.image(), b.config(),
                    b.injectError(), b.align(), b.setState());
            case BlockdevOptions.NullCo n -> new BlockdevOptions.NullCo(c, n.size(), n.readZeroes(), n.sizeGiven(),
                    n.readZeroesGiven());
            case BlockdevOptions.CopyBeforeWrite w -> new BlockdevOptions.CopyBeforeWrite(c, w.file(), w.target(),
                    w.bitmap(), w.onCbwError(), w.cbwTimeout());
            case BlockdevOptions.SnapshotAccess a -> new BlockdevOptions.SnapshotAccess(c, a.file());
            case BlockdevOptions.Nbd n -> n.withCommon(c);
            case BlockdevOptions.Rbd r -> r.withCommon(c);
        };
    }

    /**
     * Options for a format node over a file node for an image path ({@code format} null: probe),
     * as --drive and drive-backup use them. A {@code blkdebug:CONFIG:PATH} file name puts a
     * blkdebug node between the format and the file.
     */
    public BlockdevOptions imageOptions(Path path, String format, boolean readOnly, boolean cacheDirect,
                                        String nodeName) throws IOException {
        return imageOptions(path, format, readOnly, cacheDirect, nodeName, false);
    }

    /**
     * As {@link #imageOptions(Path, String, boolean, boolean, String)}, with the {@code discard}
     * option ({@code unmap} true) for the format node and its file (QEMU's children inherit it).
     */
    public BlockdevOptions imageOptions(Path path, String format, boolean readOnly, boolean cacheDirect,
                                        String nodeName, boolean discardUnmap) throws IOException {
        return imageOptions(path, format, readOnly, cacheDirect, false, nodeName, discardUnmap);
    }

    /**
     * As {@link #imageOptions(Path, String, boolean, boolean, String, boolean)}, with
     * {@code cache.no-flush} for every node it makes (QEMU's children inherit cache.direct and
     * cache.no-flush: with only the format node's set, its flush would still reach the file).
     */
    public BlockdevOptions imageOptions(Path path, String format, boolean readOnly, boolean cacheDirect,
                                        boolean cacheNoFlush, String nodeName, boolean discardUnmap)
            throws IOException {
        return imageOptions(path.toString(), format, readOnly, cacheDirect, cacheNoFlush, nodeName, discardUnmap);
    }

    /**
     * The options for an image given by a filename string, parsed as QEMU parses one
     * ({@link Filenames}: {@code json:}, protocol prefixes, plain paths; format probed when null).
     */
    public BlockdevOptions imageOptions(String filename, String format, boolean readOnly, boolean cacheDirect,
                                        boolean cacheNoFlush, String nodeName, boolean discardUnmap)
            throws IOException {
        BlockdevOptions.Common fileCommon = new BlockdevOptions.Common(null, readOnly, cacheDirect, cacheNoFlush,
                discardUnmap);
        BlockdevOptions.Common common = new BlockdevOptions.Common(nodeName, readOnly, cacheDirect, cacheNoFlush,
                discardUnmap);
        BlockdevOptions o = filenames.imageOptions(filename, format, common, fileCommon);
        if (o.common() == common) {
            return o;
        }
        // a json: object naming a format: its own members, with what the caller insists on
        BlockdevOptions.Common own = o.common();
        if (nodeName != null && own.nodeName() != null && !nodeName.equals(own.nodeName())) {
            throw new IoError(Errno.EINVAL, "Cannot set node-name '" + nodeName + "': the filename sets '"
                    + own.nodeName() + "'");
        }
        return withCommon(o, new BlockdevOptions.Common(nodeName != null ? nodeName : own.nodeName(),
                readOnly || own.readOnly(), own.cacheDirect() || cacheDirect, own.cacheNoFlush() || cacheNoFlush,
                own.discardUnmap() || discardUnmap));
    }

    /** The filename parser of this graph's drivers. */
    public Filenames filenames() {
        return filenames;
    }

    public synchronized Optional<BlockNode> node(String nodeName) {
        return Optional.ofNullable(nodes.get(nodeName));
    }

    public synchronized Collection<BlockNode> nodes() {
        return List.copyOf(nodes.values());
    }

    /**
     * The nodes in the order QEMU would have named them: a format node after its file child and
     * before its backing chain, a filter such as blkdebug before its image, separately added
     * nodes in the order they came. {@link #nodes()} is children-first instead.
     */
    public synchronized List<BlockNode> nodesInNamingOrder() {
        List<BlockNode> all = new ArrayList<>(nodes.values());
        all.sort(Comparator.comparingLong(n -> namedAt.getOrDefault(n, Long.MAX_VALUE)));
        return all;
    }

    /**
     * Adds {@code user} to the node's users after checking permissions: on the node and on
     * every node below it (a new user changes what parents need and share on their children),
     * each pair of users must share what the other needs (block.c bdrv_parent_perms_conflict(),
     * newest user first). A pair that already conflicted before this attach is not blamed on it.
     *
     * @throws IoError EPERM, {@code Permission conflict on node 'x': permissions 'write' are
     *                 both required by ... and unshared by ...}
     */
    public synchronized void attach(BlockNode node, NodeUser user) throws IoError {
        if (user.inserted() != user) {
            // QEMU inserts this BlockBackend sharing more and narrows it right after (an NBD
            // export takes resize away): what it needs is checked, and blamed, first
            checkAttach(node, user.inserted());
        }
        checkAttach(node, user);
        users.computeIfAbsent(node, n -> new ArrayList<>()).addFirst(user);
        try {
            applyPermissions(); // the image locks follow the new permissions
        } catch (IoError e) {
            detach(node, user);
            throw e;
        }
    }

    private void checkAttach(BlockNode node, NodeUser user) throws IoError {
        Map<BlockNode, List<NodeUser>> after = new HashMap<>();
        users.forEach((n, u) -> after.put(n, new ArrayList<>(u)));
        after.computeIfAbsent(node, n -> new ArrayList<>()).addFirst(user);
        for (BlockNode n : subtree(node)) {
            List<NodeUser> nodeUsers = usersOf(n, after);
            Optional<String> conflict = conflict(n, nodeUsers);
            if (conflict.isPresent() && conflict(n, usersOf(n, users)).isEmpty()) {
                throw new IoError(Errno.EPERM, conflict.get());
            }
            checkWritable(n, combined(nodeUsers));
        }
    }

    /** Refuses a use that writes a node whose storage cannot be written ({@link BlockDriver#writeUnavailable}). */
    private static void checkWritable(BlockNode n, Access use) throws IoError {
        Optional<IoError> why = n.driver().writeUnavailable();
        if (why.isPresent() && (use.needs().contains(Perm.WRITE) || use.needs().contains(Perm.WRITE_UNCHANGED)
                || use.needs().contains(Perm.RESIZE))) {
            throw new IoError(why.get().errno(), why.get().getMessage());
        }
    }

    /** Removes exactly this user (by identity) from the node's users. */
    public synchronized void detach(BlockNode node, NodeUser user) {
        List<NodeUser> u = users.get(node);
        if (u != null) {
            u.removeIf(x -> x == user);
            if (u.isEmpty()) {
                users.remove(node);
            }
        }
        applyPermissionsReleasing();
    }

    /**
     * Moves a user to another node without a permission check: a device re-pointed at a job's
     * filter above its node (which forwards the device's use) or, at a mirror's pivot, onto the
     * target the job is about to let go of (QEMU drops the job's target use before the switch).
     */
    public synchronized void move(NodeUser user, BlockNode from, BlockNode to) {
        detach(from, user);
        users.computeIfAbsent(to, n -> new ArrayList<>()).addFirst(user);
        // the use moves to nodes whose permissions the job already holds: no new conflict
        applyPermissionsReleasing();
    }

    /**
     * Who uses the node, newest first: attached users (devices, exports, jobs), then every
     * parent node's link with the access its driver derives from the parent's own users.
     */
    public synchronized List<NodeUser> usersOf(BlockNode node) {
        return usersOf(node, users);
    }

    /** The first user whose op blocker makes the node busy for jobs and blockdev-del, if any. */
    public synchronized Optional<NodeUser> blockerOf(BlockNode node) {
        return users.getOrDefault(node, List.of()).stream().filter(u -> u.blocker() != null).findFirst();
    }

    private List<NodeUser> usersOf(BlockNode node, Map<BlockNode, List<NodeUser>> attached) {
        return usersOf(node, attached, Map.of());
    }

    /**
     * As {@link #usersOf(BlockNode, Map)}, with parents read-only as {@code readOnlyAfter} says
     * where it has an entry (the state a reopen would leave).
     */
    private List<NodeUser> usersOf(BlockNode node, Map<BlockNode, List<NodeUser>> attached,
                                   Map<BlockNode, Boolean> readOnlyAfter) {
        List<NodeUser> result = new ArrayList<>(attached.getOrDefault(node, List.of()));
        // parents newest first, like attached users: QEMU lists a node's parents that way
        // (QLIST_INSERT_HEAD), which decides who is "required by" and who "unshared by"
        for (BlockNode parent : nodes.sequencedValues().reversed()) {
            for (BlockChild c : parent.driver().children()) {
                if (c.node() == node) {
                    Access parentUse = combined(usersOf(parent, attached, readOnlyAfter));
                    boolean parentRo = readOnlyAfter.getOrDefault(parent, parent.readOnly());
                    result.add(NodeUser.parent(parent, c,
                            parent.driver().childAccess(c, !parentRo, parentUse)));
                }
            }
        }
        return result;
    }

    /** What a node's users need together and all share (no users: nothing needed, all shared). */
    private static Access combined(List<NodeUser> users) {
        Set<Perm> needs = Perm.none();
        Set<Perm> shares = Perm.all();
        for (NodeUser u : users) {
            needs.addAll(u.access().needs());
            shares.retainAll(u.access().shares());
        }
        return new Access(needs, shares);
    }

    private static Optional<String> conflict(BlockNode node, List<NodeUser> users) {
        for (NodeUser a : users) {
            for (NodeUser b : users) {
                if (a == b) {
                    continue;
                }
                Set<Perm> denied = b.access().deniedBy(a.access());
                if (!denied.isEmpty()) {
                    String name = node.nodeName();
                    return Optional.of("Permission conflict on node '" + name + "': permissions '"
                            + Perm.names(denied) + "' are both required by " + b.description() + " (uses node '"
                            + name + "' as '" + b.role() + "' child) and unshared by " + a.description()
                            + " (uses node '" + name + "' as '" + a.role() + "' child).");
                }
            }
        }
        return Optional.empty();
    }

    /** The node and everything below it, the node first, each once. */
    private static List<BlockNode> subtree(BlockNode node) {
        List<BlockNode> out = new ArrayList<>();
        ArrayDeque<BlockNode> todo = new ArrayDeque<>(List.of(node));
        while (!todo.isEmpty()) {
            BlockNode n = todo.removeFirst();
            if (out.contains(n)) {
                continue;
            }
            out.add(n);
            for (BlockChild c : n.driver().children()) {
                if (c.node() != null) {
                    todo.addLast(c.node());
                }
            }
        }
        return out;
    }

    /**
     * Closes and unregisters a node that nobody uses, then its children that become unused and
     * the monitor does not own (opened with it). Throws EBUSY naming a user otherwise.
     */
    public synchronized void remove(BlockNode node) throws IOException {
        List<NodeUser> u = usersOf(node);
        if (!u.isEmpty()) {
            throw new IoError(Errno.EBUSY, "Node '" + node.nodeName() + "' is busy: " + u.getFirst().description());
        }
        List<BlockChild> children = node.driver().children();
        nodes.remove(node.nodeName());
        namedAt.remove(node);
        monitorOwned.remove(node);
        node.close();
        applyPermissionsReleasing();
        for (BlockChild c : children) {
            if (c.node() != null && !monitorOwned.contains(c.node()) && nodes.containsValue(c.node())
                    && usersOf(c.node()).isEmpty()) {
                remove(c.node());
            }
        }
    }

    /** blockdev-add made {@code node}: it stays until blockdev-del (see {@link #monitorOwned}). */
    public synchronized void markMonitorOwned(BlockNode node) {
        monitorOwned.add(node);
    }

    /** True for a node blockdev-add made and blockdev-del has not removed. */
    public synchronized boolean monitorOwned(BlockNode node) {
        return monitorOwned.contains(node);
    }

    /** Registers a node built outside {@link #add} (a job's filter node). */
    public synchronized void register(BlockNode node) throws IoError {
        if (nodes.containsKey(node.nodeName())) {
            throw new IoError(Errno.EINVAL, "Duplicate nodes with node-name='" + node.nodeName() + "'");
        }
        nodes.put(node.nodeName(), node);
        namedAt.put(node, namingClock++);
        try {
            applyPermissions();
        } catch (IoError e) {
            unregister(node);
            throw e;
        }
    }

    /** Unregisters a node without closing it or its children (a removed filter). */
    public synchronized void unregister(BlockNode node) {
        if (nodes.remove(node.nodeName(), node)) {
            namedAt.remove(node);
        }
        applyPermissionsReleasing();
    }

    // ------------------------------------------------------------------ reopen

    /**
     * One node of a blockdev-reopen and the options it is to run with: every child named by
     * reference to the node it is to have ({@link BlockdevRef.Reference}; {@link BlockdevRef.None}
     * for no backing), never inline. Built by the QMP layer, which applies QEMU's rules on which
     * options may change.
     */
    public record ReopenRequest(BlockNode node, BlockdevOptions options) {
    }

    /** The drivers whose nodes can be reopened: they keep no state a fresh open would lose. */
    private static final Set<String> REOPENABLE = Set.of("file", "host_device", "raw", "qcow2", "null-co");

    /**
     * The node's options as they are now, children by reference to the nodes it has (its
     * backing explicitly, {@code None} when it has none): what a reopen that changes nothing
     * passes, and what a failed reopen goes back to.
     */
    public synchronized BlockdevOptions currentOptions(BlockNode node) throws IoError {
        BlockdevOptions o = node.opened().options();
        if (o == null || !REOPENABLE.contains(o.driver())) {
            throw new IoError(Errno.ENOTSUP, "Block format '" + node.driver().formatName() + "' used by node '"
                    + node.nodeName() + "' does not support reopening files");
        }
        BlockdevOptions.Common c = new BlockdevOptions.Common(node.nodeName(), node.readOnly(),
                o.common().cacheDirect(), o.common().cacheNoFlush(), node.unmap());
        BlockdevRef file = null;
        for (BlockChild ch : node.driver().children()) {
            if (ch.role().equals("file") && ch.node() != null) {
                file = new BlockdevRef.Reference(ch.node().nodeName());
            }
        }
        BlockNode backing = node.driver().backing();
        BlockdevRef backingRef = backing == null ? new BlockdevRef.None() : new BlockdevRef.Reference(backing.nodeName());
        return switch (o) {
            case BlockdevOptions.File f -> f.withCommon(c);
            case BlockdevOptions.Raw r -> new BlockdevOptions.Raw(c, file, r.offset(), r.size());
            case BlockdevOptions.Qcow2 q -> new BlockdevOptions.Qcow2(c, file, backingRef, q.runtime());
            case BlockdevOptions.NullCo n -> new BlockdevOptions.NullCo(c, n.size(), n.readZeroes(), n.sizeGiven(),
                    n.readZeroesGiven());
            // refused above (REOPENABLE): QEMU 7.2 cannot reopen these either
            case BlockdevOptions.Blkdebug b -> throw new IllegalStateException("not reopenable: " + b);
            case BlockdevOptions.CopyBeforeWrite w -> throw new IllegalStateException("not reopenable: " + w);
            case BlockdevOptions.SnapshotAccess a -> throw new IllegalStateException("not reopenable: " + a);
            case BlockdevOptions.Nbd n -> throw new IllegalStateException("not reopenable: " + n);
            case BlockdevOptions.Rbd r -> throw new IllegalStateException("not reopenable: " + r);
        };
    }

    /**
     * blockdev-reopen's graph half (block.c bdrv_reopen_multiple): all the nodes change or none.
     * First the checks that need no I/O: each node's driver can reopen, a new backing makes no
     * cycle, and in the state after the reopen no read-only node has a user that needs to write
     * (bdrv_node_refresh_perm: "Block node is read-only" when it is read-only now, else "Read-only
     * block node 'x' cannot support read-write users"). Then the switch, with every node
     * quiesced around its own change: parents first, a node that was writable stores its
     * persistent bitmaps and closes its old driver (its metadata reaches the child while the
     * child can still be written); then children first, each node opens its new driver over its
     * children as they are now and takes it (so a qcow2 that becomes writable finds its file
     * writable, and marks its bitmaps in_use as an open read-write does). A failure on the way
     * puts every node back on its old options and is reported. The caller holds the devices
     * above the nodes in a drained section.
     */
    public synchronized void reopen(List<ReopenRequest> requests) throws IOException {
        if (requests.isEmpty()) {
            return;
        }
        List<ReopenEntry> entries = new ArrayList<>();
        for (ReopenRequest r : requests) {
            // a node named twice takes the last options (QEMU merges the later into the earlier)
            entries.removeIf(e -> e.node == r.node());
            entries.add(new ReopenEntry(r.node(), currentOptions(r.node()), r.options()));
        }
        Map<BlockNode, Boolean> readOnlyAfter = new HashMap<>();
        for (ReopenEntry e : entries) {
            readOnlyAfter.put(e.node, e.newOptions.common().readOnly());
            checkBacking(e);
        }
        entries = parentsFirst(entries);
        checkReopenPermissions(entries, readOnlyAfter);
        List<BlockNode> oldBackings = new ArrayList<>();
        for (ReopenEntry e : entries) {
            BlockNode b = e.node.driver().backing();
            if (b != null && !refersTo(e.newOptions, b)) {
                oldBackings.add(b);
            }
        }
        try {
            switchDrivers(entries, false);
            // ro -> rw takes the write permission: refused when another process holds it
            applyPermissions();
        } catch (IOException | RuntimeException failure) {
            try {
                switchDrivers(entries, true);
            } catch (IOException | RuntimeException rollback) {
                failure.addSuppressed(rollback);
            }
            applyPermissionsReleasing();
            throw failure;
        }
        // a backing the reopen let go of goes, unless the monitor owns it or someone still uses it
        for (BlockNode b : oldBackings) {
            if (!monitorOwned.contains(b) && nodes.containsValue(b) && usersOf(b).isEmpty()) {
                remove(b);
            }
        }
    }

    private static boolean refersTo(BlockdevOptions o, BlockNode backing) {
        return o instanceof BlockdevOptions.Qcow2 q && q.backing() instanceof BlockdevRef.Reference r
                && r.nodeName().equals(backing.nodeName());
    }

    /** bdrv_reopen_parse_file_or_backing(): the new backing exists and is not above the node. */
    private void checkBacking(ReopenEntry e) throws IoError {
        if (!(e.newOptions instanceof BlockdevOptions.Qcow2 q) || !(q.backing() instanceof BlockdevRef.Reference r)) {
            return;
        }
        BlockNode b = nodes.get(r.nodeName());
        if (b == null) {
            throw new IoError(Errno.ENOENT, "Cannot find device='' nor node-name='" + r.nodeName() + "'");
        }
        if (subtree(b).contains(e.node)) {
            throw new IoError(Errno.EINVAL, "Making '" + r.nodeName() + "' a backing child of '"
                    + e.node.nodeName() + "' would create a cycle");
        }
    }

    /** The entries ordered so that a node comes before every node below it. */
    private static List<ReopenEntry> parentsFirst(List<ReopenEntry> entries) {
        List<ReopenEntry> todo = new ArrayList<>(entries);
        List<ReopenEntry> out = new ArrayList<>();
        while (!todo.isEmpty()) {
            ReopenEntry top = todo.getFirst();
            for (ReopenEntry e : todo) {
                boolean below = false;
                for (ReopenEntry other : todo) {
                    if (other != e && subtree(other.node).contains(e.node)) {
                        below = true;
                        break;
                    }
                }
                if (!below) {
                    top = e;
                    break;
                }
            }
            todo.remove(top);
            out.add(top);
        }
        return out;
    }

    private void checkReopenPermissions(List<ReopenEntry> entries, Map<BlockNode, Boolean> readOnlyAfter)
            throws IoError {
        List<BlockNode> affected = new ArrayList<>();
        for (ReopenEntry e : entries) {
            for (BlockNode n : subtree(e.node)) {
                if (!affected.contains(n)) {
                    affected.add(n);
                }
            }
        }
        for (BlockNode n : affected) {
            if (!readOnlyAfter.getOrDefault(n, n.readOnly())) {
                continue;
            }
            Set<Perm> needs = combined(usersOf(n, users, readOnlyAfter)).needs();
            if (needs.contains(Perm.WRITE) || needs.contains(Perm.WRITE_UNCHANGED)) {
                throw new IoError(Errno.EPERM, n.readOnly() ? "Block node is read-only"
                        : "Read-only block node '" + n.nodeName() + "' cannot support read-write users");
            }
        }
    }

    /** One node's way through {@link #switchDrivers}. */
    private static final class ReopenEntry {
        final BlockNode node;
        final BlockdevOptions oldOptions;
        final BlockdevOptions newOptions;
        /** The driver the node holds was closed by the first phase and not replaced yet. */
        boolean driverClosed;

        ReopenEntry(BlockNode node, BlockdevOptions oldOptions, BlockdevOptions newOptions) {
            this.node = node;
            this.oldOptions = oldOptions;
            this.newOptions = newOptions;
        }
    }

    /** The two phases of {@link #reopen} towards the new options, or back to the old ones. */
    private void switchDrivers(List<ReopenEntry> parentsFirst, boolean back) throws IOException {
        for (ReopenEntry e : parentsFirst) {
            if (!e.node.readOnly() && !e.driverClosed) {
                e.node.quiesce();
                try {
                    e.node.bitmaps().storeForReopen();
                } catch (IOException | RuntimeException ex) {
                    e.node.resume();
                    throw ex;
                }
                e.driverClosed = true;
                e.node.driver().close();
            }
        }
        for (ReopenEntry e : parentsFirst.reversed()) {
            BlockdevOptions o = back ? e.oldOptions : e.newOptions;
            e.node.quiesce();
            try {
                BlockDriver old = e.node.driver();
                BlockDriver fresh = drivers.factory(o.driver()).open(o, referencesOnly());
                try {
                    e.node.bitmaps().reattachStore(fresh.persistentBitmaps().orElse(null),
                            o.common().readOnly() || fresh.capabilities().readOnly());
                } catch (IOException | RuntimeException ex) {
                    fresh.close();
                    throw ex;
                }
                if (!e.driverClosed) {
                    old.close();
                }
                e.node.reopen(fresh, o.common().readOnly(), o.common().discardUnmap(), o);
                e.driverClosed = false;
            } finally {
                e.node.resume();
            }
        }
    }

    /** A reopen opens drivers over nodes that exist: children by reference, nothing new. */
    private OpenContext referencesOnly() {
        return new OpenContext() {
            @Override
            public BlockNode child(BlockdevRef ref, String role, boolean readOnly) throws IOException {
                return switch (ref) {
                    case BlockdevRef.Reference r -> {
                        BlockNode n = nodes.get(r.nodeName());
                        if (n == null) {
                            throw new IoError(Errno.ENOENT, "Cannot find device='' nor node-name='"
                                    + r.nodeName() + "'");
                        }
                        yield n;
                    }
                    case BlockdevRef.None none -> null;
                    case BlockdevRef.Inline i -> throw new IllegalStateException("reopen with an inline child");
                };
            }

            @Override
            public BlockNode openBackingImage(String filename, String format, boolean readOnly) {
                throw new IllegalStateException("reopen opens no backing image");
            }
        };
    }

    /** Where nodes find their {@code tls-creds} (the daemon's objects). */
    public void setObjectLookup(ObjectLookup lookup) {
        this.tls = java.util.Objects.requireNonNull(lookup);
    }

    public String nextAutoName() {
        return "#block" + autoNames.getAndIncrement();
    }

    /** Flushes and closes every node, parents before children. Used at shutdown. */
    public synchronized void closeAll() {
        List<BlockNode> all = new ArrayList<>(nodes.values());
        // Nodes were registered children first, so close in reverse order: parents first.
        for (int i = all.size() - 1; i >= 0; i--) {
            BlockNode n = all.get(i);
            try {
                if (!n.readOnly()) {
                    n.flush();
                }
            } catch (IOException ignored) {
                // best effort: still close
            }
            try {
                n.close();
            } catch (IOException ignored) {
                // best effort at shutdown
            }
        }
        nodes.clear();
        namedAt.clear();
        users.clear();
    }
}
