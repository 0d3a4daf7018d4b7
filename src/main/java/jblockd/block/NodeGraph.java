package jblockd.block;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Comparator;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
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
    private final Map<String, BlockNode> nodes = new LinkedHashMap<>();
    /** Nodes other than parent links that keep a node in use: devices, exports, jobs. */
    private final Map<BlockNode, List<String>> users = new LinkedHashMap<>();
    private final AtomicInteger autoNames = new AtomicInteger(100);
    /**
     * When each node got its name in QEMU's terms (block.c bdrv_assign_node_name() order), for
     * query-named-block-nodes' order. Guarded by this.
     */
    private final Map<BlockNode, Long> namedAt = new HashMap<>();
    private long namingClock;

    public NodeGraph(DriverRegistry drivers) {
        this.drivers = drivers;
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
            public BlockNode openBackingImage(String filename, String format, boolean readOnly)
                    throws IOException {
                if (named[0] < 0) {
                    named[0] = namingClock++;
                }
                return open(imageOptions(Path.of(filename), format, readOnly, false, null), opened);
            }
        };
        BlockDriver driver = factory.open(options, ctx);
        boolean auto = name == null;
        BlockNode node = new BlockNode(auto ? nextAutoName() : name, auto, driver, options.common().readOnly(),
                options.common().discardUnmap());
        nodes.put(node.nodeName(), node);
        namedAt.put(node, named[0] < 0 ? namingClock++ : named[0]);
        opened.add(node);
        return node;
    }

    private static BlockdevOptions withReadOnly(BlockdevOptions o, boolean readOnly) {
        if (!readOnly || o.common().readOnly()) {
            return o;
        }
        BlockdevOptions.Common c = o.common().withReadOnly(true);
        return switch (o) {
            case BlockdevOptions.File f -> new BlockdevOptions.File(c, f.filename());
            case BlockdevOptions.Raw r -> new BlockdevOptions.Raw(c, r.file(), r.offset(), r.size());
            case BlockdevOptions.Qcow2 q -> new BlockdevOptions.Qcow2(c, q.file(), q.backing());
            case BlockdevOptions.Blkdebug b -> new BlockdevOptions.Blkdebug(c, b.image(), b.config(),
                    b.injectError(), b.align(), b.setState());
            case BlockdevOptions.NullCo n -> new BlockdevOptions.NullCo(c, n.size(), n.readZeroes(), n.sizeGiven(),
                    n.readZeroesGiven());
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
        BlockdevOptions.Common fileCommon = new BlockdevOptions.Common(null, readOnly, cacheDirect, cacheNoFlush,
                discardUnmap);
        String p = path.toString();
        BlockdevRef fileRef;
        Path realPath = path;
        if (p.startsWith("blkdebug:")) {
            int sep = p.indexOf(':', "blkdebug:".length());
            if (sep < 0) {
                throw new IoError(Errno.EINVAL, "blkdebug requires both config file and image path");
            }
            String config = p.substring("blkdebug:".length(), sep);
            realPath = Path.of(p.substring(sep + 1));
            fileRef = new BlockdevRef.Inline(new BlockdevOptions.Blkdebug(fileCommon,
                    new BlockdevRef.Inline(new BlockdevOptions.File(fileCommon, realPath.toString())),
                    config.isEmpty() ? null : config, List.of(), null));
        } else {
            fileRef = new BlockdevRef.Inline(new BlockdevOptions.File(fileCommon, p));
        }
        if (!Files.exists(realPath)) {
            throw new IoError(Errno.ENOENT, "Could not open '" + realPath + "': No such file or directory");
        }
        String fmt = format != null ? format : drivers.probe(realPath);
        BlockdevOptions.Common common = new BlockdevOptions.Common(nodeName, readOnly, cacheDirect, cacheNoFlush,
                discardUnmap);
        return switch (fmt) {
            case "raw" -> new BlockdevOptions.Raw(common, fileRef, null, null);
            case "qcow2" -> new BlockdevOptions.Qcow2(common, fileRef, null);
            default -> throw new IoError(Errno.EINVAL, "Unknown file format '" + fmt + "'");
        };
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

    /** Records that {@code user} (a device, export or job description) keeps the node in use. */
    public synchronized void addUser(BlockNode node, String user) {
        users.computeIfAbsent(node, n -> new ArrayList<>()).add(user);
    }

    public synchronized void removeUser(BlockNode node, String user) {
        List<String> u = users.get(node);
        if (u != null) {
            u.remove(user);
            if (u.isEmpty()) {
                users.remove(node);
            }
        }
    }

    /** Who uses the node: registered users plus every parent node ("parent:NAME"). */
    public synchronized List<String> usersOf(BlockNode node) {
        List<String> result = new ArrayList<>(users.getOrDefault(node, List.of()));
        for (BlockNode parent : nodes.values()) {
            for (BlockChild c : parent.driver().children()) {
                if (c.node() == node) {
                    result.add("parent:" + parent.nodeName());
                }
            }
        }
        return result;
    }

    /**
     * Closes and unregisters a node that nobody uses, then its children that become unused and
     * were auto-named (opened with it). Throws EBUSY naming a user otherwise.
     */
    public synchronized void remove(BlockNode node) throws IOException {
        List<String> u = usersOf(node);
        if (!u.isEmpty()) {
            throw new IoError(Errno.EBUSY, "Node '" + node.nodeName() + "' is busy: " + u.getFirst());
        }
        List<BlockChild> children = node.driver().children();
        nodes.remove(node.nodeName());
        namedAt.remove(node);
        node.close();
        for (BlockChild c : children) {
            if (c.node() != null && c.node().autoNamed() && nodes.containsValue(c.node())
                    && usersOf(c.node()).isEmpty()) {
                remove(c.node());
            }
        }
    }

    /** Registers a node built outside {@link #add} (a job's filter node). */
    public synchronized void register(BlockNode node) throws IoError {
        if (nodes.containsKey(node.nodeName())) {
            throw new IoError(Errno.EINVAL, "Duplicate nodes with node-name='" + node.nodeName() + "'");
        }
        nodes.put(node.nodeName(), node);
        namedAt.put(node, namingClock++);
    }

    /** Unregisters a node without closing it or its children (a removed filter). */
    public synchronized void unregister(BlockNode node) {
        if (nodes.remove(node.nodeName(), node)) {
            namedAt.remove(node);
        }
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
