package jblockd.commands;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.BlockdevRef;
import jblockd.block.ImageCreator;
import jblockd.block.IoError;
import jblockd.block.NodeGraph;
import jblockd.block.NodeUser;
import jblockd.block.Perm;
import jblockd.device.Device;
import jblockd.device.Devices;
import jblockd.qapi.NewImageMode;
import jblockd.qapi.QmpError;
import jblockd.qapi.TransactionActionKind;
import jblockd.qmp.CommandGroup;
import jblockd.qmp.CommandRegistry;

/**
 * {@code blockdev-snapshot} and {@code blockdev-snapshot-sync} (QEMU 7.2 blockdev.c
 * external_snapshot_prepare/commit/abort/clean), each a transaction of one {@link SnapshotAction}
 * and a transaction action type. The overlay becomes the top above the node: every device and
 * export on the node moves to it, and the node becomes its backing (bdrv_append). The sync form
 * first creates the qcow2 (or other format) overlay with the node's filename and format as its
 * backing, unless {@code mode: existing}, and opens it without its backing.
 */
public final class SnapshotCommands implements CommandGroup {

    public record BlockdevSnapshotArgs(String node, String overlay) {
    }

    public record BlockdevSnapshotSyncArgs(String device, String nodeName, String snapshotFile,
                                           String snapshotNodeName, String format, NewImageMode mode) {
    }

    private final NodeGraph graph;
    private final Devices devices;
    private final Transactions transactions;
    private final ReopenCommands reopen;

    /** {@code reopen} makes the old top read-only once the overlay is on top of it. */
    public SnapshotCommands(NodeGraph graph, Devices devices, ReopenCommands reopen) {
        this.graph = graph;
        this.devices = devices;
        this.transactions = new Transactions(devices);
        this.reopen = reopen;
    }

    @Override
    public void register(CommandRegistry r) {
        r.register("blockdev-snapshot", BlockdevSnapshotArgs.class, a -> {
            transactions.run(List.of(snapshotAction(a, null)), false);
            return null;
        });
        r.register("blockdev-snapshot-sync", BlockdevSnapshotSyncArgs.class, a -> {
            transactions.run(List.of(snapshotSyncAction(a, null)), false);
            return null;
        });
    }

    public void registerActions(TransactionCommands t) {
        t.registerAction(TransactionActionKind.BLOCKDEV_SNAPSHOT, BlockdevSnapshotArgs.class, this::snapshotAction);
        t.registerAction(TransactionActionKind.BLOCKDEV_SNAPSHOT_SYNC, BlockdevSnapshotSyncArgs.class,
                this::snapshotSyncAction);
    }

    private SnapshotAction snapshotAction(BlockdevSnapshotArgs a, jblockd.job.JobTxn txn) {
        return new SnapshotAction(TransactionActionKind.BLOCKDEV_SNAPSHOT, a.node(), a.node(), null, a.overlay(),
                null, null, null);
    }

    private SnapshotAction snapshotSyncAction(BlockdevSnapshotSyncArgs a, jblockd.job.JobTxn txn) {
        return new SnapshotAction(TransactionActionKind.BLOCKDEV_SNAPSHOT_SYNC, a.device(), a.nodeName(),
                a.snapshotFile(), null, a.snapshotNodeName(), a.format() == null ? "qcow2" : a.format(),
                a.mode() == null ? NewImageMode.ABSOLUTE_PATHS : a.mode());
    }

    /** One external snapshot: prepare does the whole graph change, abort puts it back. */
    final class SnapshotAction implements TransactionAction {
        private final TransactionActionKind kind;
        private final String device;
        private final String nodeName;
        private final String snapshotFile;
        private final String overlayRef;
        private final String snapshotNodeName;
        private final String format;
        private final NewImageMode mode;
        private BlockNode oldTop;
        private BlockNode overlay;
        /** True when prepare opened the overlay (sync): abort closes it again. */
        private boolean opened;
        private final List<Device> moved = new ArrayList<>();
        private boolean appended;

        SnapshotAction(TransactionActionKind kind, String device, String nodeName, String snapshotFile,
                       String overlayRef, String snapshotNodeName, String format, NewImageMode mode) {
            this.kind = kind;
            this.device = device;
            this.nodeName = nodeName;
            this.snapshotFile = snapshotFile;
            this.overlayRef = overlayRef;
            this.snapshotNodeName = snapshotNodeName;
            this.format = format;
            this.mode = mode;
        }

        @Override
        public TransactionActionKind kind() {
            return kind;
        }

        @Override
        public List<BlockNode> nodes() {
            return lookup().map(List::of).orElse(List.of());
        }

        /** bdrv_lookup_bs(device, node_name): a device's root first, then a node name. */
        private Optional<BlockNode> lookup() {
            if (device != null) {
                Optional<Device> d = devices.get(device);
                if (d.isPresent()) {
                    return Optional.of(d.get().root());
                }
            }
            return nodeName == null ? Optional.empty() : graph.node(nodeName);
        }

        @Override
        public void prepare() throws QmpError {
            oldTop = lookup().orElseThrow(() -> QmpError.generic("Cannot find device='"
                    + (device == null ? "" : device) + "' nor node-name='" + (nodeName == null ? "" : nodeName) + "'"));
            Optional<NodeUser> blocker = graph.blockerOf(oldTop);
            if (blocker.isPresent()) {
                throw QmpError.generic("Node '" + devices.deviceOf(oldTop).map(Device::name).orElse(oldTop.nodeName())
                        + "' is busy: " + blocker.get().blocker());
            }
            if (!oldTop.readOnly()) {
                try {
                    oldTop.flush();
                } catch (IOException e) {
                    throw QmpError.generic("Input/output error");
                }
            }
            if (kind == TransactionActionKind.BLOCKDEV_SNAPSHOT_SYNC) {
                overlay = openSyncOverlay();
                opened = true;
            } else {
                overlay = graph.node(overlayRef).orElseThrow(() -> QmpError.generic(
                        "Cannot find device='" + overlayRef + "' nor node-name='" + overlayRef + "'"));
            }
            try {
                checkOverlay();
                append();
            } catch (QmpError | RuntimeException e) {
                undo();
                throw e;
            }
        }

        /** The sync form's checks, image creation and open (QEMU's order and texts). */
        private BlockNode openSyncOverlay() throws QmpError {
            if (nodeName != null && snapshotNodeName == null) {
                throw QmpError.generic("New overlay node-name missing");
            }
            if (snapshotNodeName != null && (graph.node(snapshotNodeName).isPresent()
                    || devices.get(snapshotNodeName).isPresent())) {
                throw QmpError.generic("New overlay node-name already in use");
            }
            if (mode != NewImageMode.EXISTING) {
                Path path = creationPath(snapshotFile);
                ImageCreator creator = graph.drivers().creator(format)
                        .orElseThrow(() -> QmpError.generic("Unknown file format '" + format + "'"));
                if ("raw".equals(format)) {
                    throw QmpError.generic("Backing file not supported for file format 'raw'");
                }
                Path parent = path.toAbsolutePath().getParent();
                if (parent != null && !Files.isDirectory(parent)) {
                    throw QmpError.generic("Could not create '" + path + "': No such file or directory");
                }
                try {
                    // QEMU records the old top's filename as it knows it (filenames.md §4)
                    creator.create(new ImageCreator.Options(path, oldTop.length(), oldTop.driver().filename(),
                            oldTop.driver().formatName(), 0, false));
                } catch (IOException e) {
                    throw QmpError.generic("Could not create '" + path + "': " + IoError.wrap(e).errno().strerror());
                }
            }
            try {
                BlockdevOptions o = graph.imageOptions(snapshotFile, format, false, false, false, snapshotNodeName,
                        false);
                if (o instanceof BlockdevOptions.Qcow2 q) {
                    // BDRV_O_NO_BACKING: the old top becomes the backing below, not a second open
                    o = new BlockdevOptions.Qcow2(q.common(), q.file(), new BlockdevRef.None(), q.runtime());
                }
                return graph.add(o);
            } catch (IOException e) {
                String msg = IoError.wrap(e).getMessage();
                throw QmpError.generic(msg != null && msg.startsWith("Could not open") ? msg
                        : "Could not open '" + snapshotFile + "': " + IoError.wrap(e).errno().strerror());
            }
        }

        /** Where a new overlay goes: only a host file can be created (filename parsed as QEMU). */
        private Path creationPath(String filename) throws QmpError {
            try {
                return graph.filenames().creationPath(filename);
            } catch (IOException e) {
                throw QmpError.generic(IoError.wrap(e).getMessage());
            }
        }

        /** external_snapshot_prepare()'s overlay checks. */
        private void checkOverlay() throws QmpError {
            boolean reading = graph.usersOf(overlay).stream()
                    .anyMatch(u -> u.access().needs().contains(Perm.CONSISTENT_READ));
            if (reading || !devices.attachedTo(overlay).isEmpty()) {
                throw QmpError.generic("The overlay is already in use");
            }
            if (overlay.driver().filtered() != null) {
                throw QmpError.generic("Filters cannot be used as overlays");
            }
            if (overlay.driver().backing() != null) {
                throw QmpError.generic("The overlay already has a backing image");
            }
            if (!overlay.driver().supportsBacking()) {
                throw QmpError.generic("The overlay does not support backing images");
            }
        }

        /** bdrv_append(): the old top goes below the overlay, its devices and exports above. */
        private void append() throws QmpError {
            try {
                overlay.driver().linkBacking(oldTop);
            } catch (IoError e) {
                throw QmpError.generic(e.getMessage());
            }
            appended = true;
            for (Device d : devices.attachedTo(oldTop)) {
                devices.replaceRoot(d, overlay);
                moved.add(d);
            }
        }

        /**
         * external_snapshot_commit(): the old top, now only read through the overlay, is
         * reopened read-only (with the file it opened inline), unless something still needs to
         * write it; that refusal is silent, as QEMU passes no error pointer.
         */
        @Override
        public void commit() {
            reopen.makeReadOnlyQuietly(oldTop);
        }

        @Override
        public void abort() {
            undo();
        }

        /** external_snapshot_abort(): devices back onto the old top, the overlay alone again. */
        private void undo() {
            for (Device d : moved.reversed()) {
                devices.replaceRoot(d, oldTop);
            }
            moved.clear();
            if (appended) {
                try {
                    overlay.driver().linkBacking(null);
                } catch (IoError e) {
                    throw new IllegalStateException(e);
                }
                appended = false;
            }
            if (opened) {
                // QEMU drops the overlay it opened (the created file stays on disk, as in QEMU)
                try {
                    graph.remove(overlay);
                } catch (IOException e) {
                    throw new IllegalStateException("snapshot overlay could not be closed", e);
                }
                opened = false;
            }
        }
    }
}
