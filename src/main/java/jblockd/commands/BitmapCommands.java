package jblockd.commands;

import java.util.ArrayList;
import java.util.List;
import java.util.logging.Level;
import java.util.logging.Logger;

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.annotation.JsonPropertyOrder;
import com.fasterxml.jackson.databind.JsonNode;

import jblockd.block.BlockNode;
import jblockd.block.bitmap.BitmapException;
import jblockd.block.bitmap.BlockDirtyBitmap;
import jblockd.block.bitmap.NodeBitmaps;
import jblockd.device.Device;
import jblockd.device.Devices;
import jblockd.qapi.QmpError;
import jblockd.qapi.TransactionActionKind;
import jblockd.qmp.CommandGroup;
import jblockd.qmp.CommandRegistry;

/**
 * dirty-bitmap.json: the six {@code block-dirty-bitmap-*} commands and
 * {@code x-debug-block-dirty-bitmap-sha256} (qemu/qemu block/monitor/bitmap-qmp-cmds.c), with
 * QEMU 7.2's lookups, check order and texts (reference/bitmaps.md §2): arguments, node lookup,
 * bitmap lookup, then busy / read-only / inconsistent. Also builds the {@code dirty-bitmaps}
 * query member ({@link #dirtyBitmaps}). Every error is a GenericError and leaves every bitmap
 * as it was. Thread-safe: each node's bitmaps serialise their own changes.
 */
public final class BitmapCommands implements CommandGroup {
    private static final Logger LOG = Logger.getLogger(BitmapCommands.class.getName());

    public record BlockDirtyBitmapArgs(String node, String name) {
    }

    public record BlockDirtyBitmapAdd(String node, String name, Long granularity, Boolean persistent,
                                      Boolean disabled) {
    }

    /** {@code bitmaps}: each a name (on {@code node}) or {@code {"node", "name"}} (the alternate). */
    public record BlockDirtyBitmapMerge(String node, String target, List<JsonNode> bitmaps) {
    }

    public record BlockDirtyBitmapSha256(String sha256) {
    }

    /** qapi BlockDirtyInfo, in the member order QEMU 7.2 sends (observed). */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    @JsonPropertyOrder({"name", "recording", "persistent", "busy", "granularity", "count", "inconsistent"})
    public record BlockDirtyInfo(String name, boolean recording, boolean persistent, boolean busy, long granularity,
                                 long count, Boolean inconsistent) {
        static BlockDirtyInfo of(BlockDirtyBitmap.Info i) {
            return new BlockDirtyInfo(i.name(), i.recording(), i.persistent(), i.busy(), i.granularity(), i.count(),
                    i.inconsistent() ? Boolean.TRUE : null);
        }
    }

    /** Smallest and largest default granularity (bdrv_get_default_bitmap_granularity). */
    static final long MIN_DEFAULT_GRANULARITY = 4096;
    static final long MAX_DEFAULT_GRANULARITY = 65536;

    private final Devices devices;

    public BitmapCommands(Devices devices) {
        this.devices = devices;
    }

    @Override
    public void register(CommandRegistry r) {
        r.register("block-dirty-bitmap-add", BlockDirtyBitmapAdd.class, a -> alone(addAction(a)));
        r.register("block-dirty-bitmap-remove", BlockDirtyBitmapArgs.class, a -> alone(removeAction(a)));
        r.register("block-dirty-bitmap-clear", BlockDirtyBitmapArgs.class, a -> alone(clearAction(a)));
        r.register("block-dirty-bitmap-enable", BlockDirtyBitmapArgs.class,
                a -> alone(enableAction(a, true)));
        r.register("block-dirty-bitmap-disable", BlockDirtyBitmapArgs.class,
                a -> alone(enableAction(a, false)));
        r.register("block-dirty-bitmap-merge", BlockDirtyBitmapMerge.class, a -> alone(mergeAction(a)));
        r.register("x-debug-block-dirty-bitmap-sha256", BlockDirtyBitmapArgs.class, this::sha256);
    }

    /**
     * The six commands as {@code transaction} actions (QEMU's block_dirty_bitmap_*_prepare /
     * _abort / _commit): the command and the action are the same code.
     */
    public void registerActions(TransactionCommands t) {
        t.registerAction(TransactionActionKind.BLOCK_DIRTY_BITMAP_ADD, BlockDirtyBitmapAdd.class,
                (a, txn) -> addAction(a));
        t.registerAction(TransactionActionKind.BLOCK_DIRTY_BITMAP_REMOVE, BlockDirtyBitmapArgs.class,
                (a, txn) -> removeAction(a));
        t.registerAction(TransactionActionKind.BLOCK_DIRTY_BITMAP_CLEAR, BlockDirtyBitmapArgs.class,
                (a, txn) -> clearAction(a));
        t.registerAction(TransactionActionKind.BLOCK_DIRTY_BITMAP_ENABLE, BlockDirtyBitmapArgs.class,
                (a, txn) -> enableAction(a, true));
        t.registerAction(TransactionActionKind.BLOCK_DIRTY_BITMAP_DISABLE, BlockDirtyBitmapArgs.class,
                (a, txn) -> enableAction(a, false));
        t.registerAction(TransactionActionKind.BLOCK_DIRTY_BITMAP_MERGE, BlockDirtyBitmapMerge.class,
                (a, txn) -> mergeAction(a));
    }

    /** A command outside a transaction: its action prepared and committed at once. */
    private static Object alone(TransactionAction action) throws QmpError {
        action.prepare();
        action.commit();
        action.clean();
        return null;
    }

    /** A bitmap action: its kind, the nodes it names (for the transaction's drain), its steps. */
    private abstract class BitmapAction implements TransactionAction {
        private final TransactionActionKind kind;
        private final List<String> nodeNames;

        BitmapAction(TransactionActionKind kind, String... nodeNames) {
            this.kind = kind;
            this.nodeNames = List.of(nodeNames);
        }

        @Override
        public TransactionActionKind kind() {
            return kind;
        }

        @Override
        public List<BlockNode> nodes() {
            List<BlockNode> out = new ArrayList<>();
            for (String n : nodeNames) {
                devices.lookupNode(n).ifPresent(out::add);
            }
            return out;
        }
    }

    /**
     * qmp_block_dirty_bitmap_add(): empty name (before the lookup), node (a device name is its
     * root), granularity, then the node's own checks (persistence, name taken, name length).
     * Rolled back by releasing the new bitmap (a persistent one is not in the image before close).
     */
    TransactionAction addAction(BlockDirtyBitmapAdd a) {
        return new BitmapAction(TransactionActionKind.BLOCK_DIRTY_BITMAP_ADD, a.node()) {
            private BlockDirtyBitmap created;

            @Override
            public void prepare() throws QmpError {
                if (a.name().isEmpty()) {
                    throw QmpError.generic("Bitmap name cannot be empty");
                }
                BlockNode node = devices.lookupNode(a.node()).orElseThrow(() -> QmpError.generic(
                        "Cannot find device='" + a.node() + "' nor node-name='" + a.node() + "'"));
                long granularity;
                if (a.granularity() != null) {
                    granularity = a.granularity();
                    if (granularity < 512 || Long.bitCount(granularity) != 1) {
                        throw QmpError.generic("Granularity must be power of 2 and at least 512");
                    }
                } else {
                    granularity = defaultGranularity(node);
                }
                try {
                    created = node.bitmaps().create(a.name(), granularity, Boolean.TRUE.equals(a.disabled()),
                            Boolean.TRUE.equals(a.persistent()), shownName(node));
                } catch (BitmapException e) {
                    throw QmpError.generic(e.getMessage());
                }
            }

            @Override
            public void abort() {
                if (created != null) {
                    created.owner().release(created);
                }
            }
        };
    }

    /**
     * bdrv_get_default_bitmap_granularity(): the cluster size clamped to [4 KiB, 64 KiB], 64 KiB
     * when the driver has none (raw, file, null-co).
     */
    static long defaultGranularity(BlockNode node) {
        int cluster = node.driver().clusterSize();
        if (cluster <= 0) {
            return MAX_DEFAULT_GRANULARITY;
        }
        return Math.min(MAX_DEFAULT_GRANULARITY, Math.max(MIN_DEFAULT_GRANULARITY, cluster));
    }

    /**
     * do_block_dirty_bitmap_remove(): busy and read-only refused, inconsistent allowed. As in
     * QEMU's block_dirty_bitmap_remove_prepare, the bitmap is only held busy in prepare (a later
     * action of the transaction cannot use it) and goes at commit; abort frees it again.
     */
    TransactionAction removeAction(BlockDirtyBitmapArgs a) {
        return new BitmapAction(TransactionActionKind.BLOCK_DIRTY_BITMAP_REMOVE, a.node()) {
            private BlockDirtyBitmap held;

            @Override
            public void prepare() throws QmpError {
                BlockDirtyBitmap b = lookup(a.node(), a.name());
                try {
                    b.check(BlockDirtyBitmap.Check.REMOVE);
                } catch (BitmapException e) {
                    throw QmpError.generic(e.getMessage());
                }
                b.owner().setBusy(b, true);
                held = b;
            }

            @Override
            public void commit() {
                held.owner().setBusy(held, false);
                try {
                    held.owner().remove(held);
                } catch (BitmapException e) {
                    // checked in prepare and held busy since: only the image's own update can
                    // fail here; the bitmap then stays, as the command's failure leaves it
                    LOG.log(Level.WARNING, "block-dirty-bitmap-remove in a transaction: " + e.getMessage(), e);
                }
                held = null;
            }

            @Override
            public void abort() {
                if (held != null) {
                    held.owner().setBusy(held, false);
                }
            }
        };
    }

    /** Clear keeps the old bits in prepare, so abort restores them (QEMU's backup HBitmap). */
    TransactionAction clearAction(BlockDirtyBitmapArgs a) {
        return new BitmapAction(TransactionActionKind.BLOCK_DIRTY_BITMAP_CLEAR, a.node()) {
            private BlockDirtyBitmap cleared;
            private jblockd.block.bitmap.DirtyBitmap saved;

            @Override
            public void prepare() throws QmpError {
                BlockDirtyBitmap b = lookup(a.node(), a.name());
                jblockd.block.bitmap.DirtyBitmap before = b.bits().copy();
                try {
                    b.owner().clear(b);
                } catch (BitmapException e) {
                    throw QmpError.generic(e.getMessage());
                }
                cleared = b;
                saved = before;
            }

            @Override
            public void abort() {
                if (cleared != null) {
                    cleared.bits().restore(saved);
                }
            }
        };
    }

    /** Enable and disable allow a read-only bitmap (they only change the in-memory state). */
    TransactionAction enableAction(BlockDirtyBitmapArgs a, boolean enabled) {
        return new BitmapAction(enabled ? TransactionActionKind.BLOCK_DIRTY_BITMAP_ENABLE
                : TransactionActionKind.BLOCK_DIRTY_BITMAP_DISABLE, a.node()) {
            private BlockDirtyBitmap changed;
            private boolean was;

            @Override
            public void prepare() throws QmpError {
                BlockDirtyBitmap b = lookup(a.node(), a.name());
                boolean before = b.enabled();
                try {
                    b.owner().setEnabled(b, enabled);
                } catch (BitmapException e) {
                    throw QmpError.generic(e.getMessage());
                }
                changed = b;
                was = before;
            }

            @Override
            public void abort() {
                if (changed != null) {
                    try {
                        changed.owner().setEnabled(changed, was);
                    } catch (BitmapException e) {
                        // it passed the same checks in prepare and nothing ran since (drained)
                        LOG.log(Level.WARNING, "bitmap enable/disable rollback: " + e.getMessage(), e);
                    }
                }
            }
        };
    }

    /**
     * block_dirty_bitmap_merge() in QEMU 7.2's order (observed): the target's lookup, then for
     * each source in turn its lookup (a name is looked up on the target's node), the target's
     * checks, the source's checks (it may be read-only) and the size; only when every source
     * passed is anything merged, so a refusal leaves the target unchanged (as in QEMU).
     * {@code bitmaps: []} is refused: QEMU 7.2 dies of SIGSEGV on it. The target's old bits are
     * kept for abort.
     */
    TransactionAction mergeAction(BlockDirtyBitmapMerge a) {
        return new BitmapAction(TransactionActionKind.BLOCK_DIRTY_BITMAP_MERGE, a.node()) {
            private BlockDirtyBitmap merged;
            private jblockd.block.bitmap.DirtyBitmap saved;

            @Override
            public void prepare() throws QmpError {
                if (a.bitmaps().isEmpty()) {
                    throw QmpError.generic("'bitmaps' must not be empty");
                }
                BlockDirtyBitmap target = lookup(a.node(), a.target());
                NodeBitmaps targetNode = target.owner();
                List<BlockDirtyBitmap> sources = new ArrayList<>();
                for (JsonNode item : a.bitmaps()) {
                    BlockDirtyBitmap src;
                    if (item.isTextual()) {
                        String name = item.asText();
                        src = targetNode.find(name).orElseThrow(() -> notFound(name));
                    } else {
                        src = lookup(item.get("node").asText(), item.get("name").asText());
                    }
                    try {
                        // checked here too, before the next source is looked up: QEMU's order
                        NodeBitmaps.checkMerge(target, src);
                    } catch (BitmapException e) {
                        throw QmpError.generic(e.getMessage());
                    }
                    sources.add(src);
                }
                jblockd.block.bitmap.DirtyBitmap before = target.bits().copy();
                try {
                    targetNode.merge(target, sources);
                } catch (BitmapException e) {
                    throw QmpError.generic(e.getMessage());
                }
                merged = target;
                saved = before;
            }

            @Override
            public void abort() {
                if (merged != null) {
                    merged.bits().restore(saved);
                }
            }
        };
    }

    /** x-debug-block-dirty-bitmap-sha256: no state checks (it works on inconsistent bitmaps). */
    Object sha256(BlockDirtyBitmapArgs a) throws QmpError {
        return new BlockDirtyBitmapSha256(lookup(a.node(), a.name()).bits().sha256());
    }

    /**
     * block_dirty_bitmap_lookup(): the node by device or node name ({@code Node 'x' not found}),
     * then the bitmap on it.
     */
    private BlockDirtyBitmap lookup(String nodeName, String name) throws QmpError {
        BlockNode node = devices.lookupNode(nodeName).orElseThrow(() ->
                QmpError.generic("Node '" + nodeName + "' not found"));
        return node.bitmaps().find(name).orElseThrow(() -> notFound(name));
    }

    private static QmpError notFound(String name) {
        return QmpError.generic("Dirty bitmap '" + name + "' not found");
    }

    /** bdrv_get_device_or_node_name(): the device's name when the node is its root, else the node's. */
    private String shownName(BlockNode node) {
        return devices.deviceOf(node).map(Device::name).orElse(node.nodeName());
    }

    /**
     * The {@code dirty-bitmaps} member of a node's BlockDeviceInfo (block/dirty-bitmap.c
     * bdrv_query_dirty_bitmaps()): newest first, anonymous ones without a name; null (the member
     * is omitted) when the node has none.
     */
    static List<BlockDirtyInfo> dirtyBitmaps(BlockNode node) {
        List<BlockDirtyBitmap> list = node.bitmaps().list();
        if (list.isEmpty()) {
            return null;
        }
        List<BlockDirtyInfo> out = new ArrayList<>(list.size());
        for (BlockDirtyBitmap b : list) {
            out.add(BlockDirtyInfo.of(b.info()));
        }
        return out;
    }
}
