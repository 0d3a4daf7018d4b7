package jblockd.commands;

import java.io.IOException;
import java.util.List;
import java.util.Optional;

import jblockd.block.BlockNode;
import jblockd.block.InternalSnapshots;
import jblockd.block.IoError;
import jblockd.block.NodeGraph;
import jblockd.block.NodeUser;
import jblockd.block.SnapshotInfo;
import jblockd.device.Device;
import jblockd.device.Devices;
import jblockd.device.DrainedSection;
import jblockd.qapi.QmpError;
import jblockd.qapi.TransactionActionKind;
import jblockd.qmp.CommandGroup;
import jblockd.qmp.CommandRegistry;

/**
 * {@code blockdev-snapshot-internal-sync} (also a transaction action) and
 * {@code blockdev-snapshot-delete-internal-sync}, as QEMU 7.2's blockdev.c
 * internal_snapshot_prepare/abort and qmp_blockdev_snapshot_delete_internal_sync: the checks in
 * QEMU's order with its texts, the snapshot taken by the node's driver or the one below it
 * ({@link InternalSnapshots#of}: raw over rbd takes an RBD snapshot), drained. Drivers with
 * internal snapshots: rbd; qcow2 lists its table but refuses to change it.
 * <p>
 * One deliberate difference: when a later action of a transaction fails, the snapshot this one
 * took is deleted by name. QEMU 7.2 deletes it by its empty id string, which rbd refuses, so its
 * RBD snapshot outlives the failed transaction.
 */
public final class InternalSnapshotCommands implements CommandGroup {

    /** qapi/transaction.json BlockdevSnapshotInternal. */
    public record BlockdevSnapshotInternal(String device, String name) {
    }

    /** blockdev-snapshot-delete-internal-sync's arguments. */
    public record BlockdevSnapshotDeleteInternal(String device, String id, String name) {
    }

    private final NodeGraph graph;
    private final Devices devices;
    private final Transactions transactions;

    public InternalSnapshotCommands(NodeGraph graph, Devices devices) {
        this.graph = graph;
        this.devices = devices;
        this.transactions = new Transactions(devices);
    }

    @Override
    public void register(CommandRegistry r) {
        r.register("blockdev-snapshot-internal-sync", BlockdevSnapshotInternal.class, a -> {
            transactions.run(List.of(new TakeAction(a)), false);
            return null;
        });
        r.register("blockdev-snapshot-delete-internal-sync", BlockdevSnapshotDeleteInternal.class, this::delete);
    }

    public void registerActions(TransactionCommands t) {
        t.registerAction(TransactionActionKind.BLOCKDEV_SNAPSHOT_INTERNAL_SYNC, BlockdevSnapshotInternal.class,
                (a, txn) -> new TakeAction(a));
    }

    /** qmp_get_root_bs(): a device or node name whose node has no parent node. */
    private BlockNode rootNode(String device) throws QmpError {
        BlockNode bs = devices.lookupNode(device).orElseThrow(() -> QmpError.generic(
                "Cannot find device='" + device + "' nor node-name='" + device + "'"));
        for (NodeUser u : graph.usersOf(bs)) {
            if (u.kind() == NodeUser.Kind.PARENT) {
                throw QmpError.generic("Need a root block node");
            }
        }
        return bs;
    }

    /** bdrv_op_is_blocked(): a job on the node refuses it, naming the device or node. */
    private void checkNotBlocked(BlockNode bs) throws QmpError {
        Optional<NodeUser> blocker = graph.blockerOf(bs);
        if (blocker.isPresent()) {
            throw QmpError.generic("Node '" + devices.deviceOf(bs).map(Device::name).orElse(bs.nodeName())
                    + "' is busy: " + blocker.get().blocker());
        }
    }

    /** bdrv_snapshot_find_by_id_and_name(): both given must match, else the one given. */
    private static Optional<SnapshotInfo> find(List<SnapshotInfo> list, String id, String name) {
        return list.stream()
                .filter(s -> (id == null || s.id().equals(id)) && (name == null || s.name().equals(name)))
                .findFirst();
    }

    private ImageInfos.SnapshotInfoWire delete(BlockdevSnapshotDeleteInternal a) throws QmpError {
        BlockNode bs = rootNode(a.device());
        if (a.id() == null && a.name() == null) {
            throw QmpError.generic("Name or id must be provided");
        }
        checkNotBlocked(bs);
        Optional<InternalSnapshots> snaps = InternalSnapshots.of(bs);
        if (snaps.isEmpty()) {
            // bdrv_snapshot_list() answers -ENOTSUP
            throw QmpError.generic("Failed to get a snapshot list: Operation not supported");
        }
        SnapshotInfo found;
        try (DrainedSection drained = devices.drain(bs)) {
            List<SnapshotInfo> list;
            try {
                list = snaps.get().list();
            } catch (IOException e) {
                throw QmpError.generic("Failed to get a snapshot list: " + IoError.wrap(e).errno().strerror());
            }
            found = find(list, a.id(), a.name()).orElseThrow(() -> QmpError.generic("Snapshot with id '"
                    + a.id() + "' and name '" + a.name() + "' does not exist on device '" + a.device() + "'"));
            try {
                // QEMU passes the user's id and name on, not the ones found
                snaps.get().delete(a.id(), a.name());
            } catch (IOException e) {
                throw QmpError.generic(IoError.wrap(e).getMessage());
            }
        }
        return ImageInfos.SnapshotInfoWire.of(found);
    }

    /** internal_snapshot_prepare() takes the snapshot; abort deletes it again (by name). */
    private final class TakeAction implements TransactionAction {
        private final BlockdevSnapshotInternal args;
        private InternalSnapshots taken;

        TakeAction(BlockdevSnapshotInternal args) {
            this.args = args;
        }

        @Override
        public TransactionActionKind kind() {
            return TransactionActionKind.BLOCKDEV_SNAPSHOT_INTERNAL_SYNC;
        }

        @Override
        public List<BlockNode> nodes() {
            return devices.lookupNode(args.device()).map(List::of).orElse(List.of());
        }

        @Override
        public void prepare() throws QmpError {
            String device = args.device();
            String name = args.name();
            BlockNode bs = rootNode(device);
            checkNotBlocked(bs);
            if (bs.readOnly()) {
                throw QmpError.generic("Device '" + device + "' is read only");
            }
            InternalSnapshots snaps = InternalSnapshots.of(bs).orElseThrow(() -> QmpError.generic("Block format '"
                    + bs.driver().formatName() + "' used by device '" + device
                    + "' does not support internal snapshots"));
            if (name.isEmpty()) {
                throw QmpError.generic("Name is empty");
            }
            try {
                if (find(snaps.list(), null, name).isPresent()) {
                    throw QmpError.generic("Snapshot with name '" + name + "' already exists on device '" + device + "'");
                }
                snaps.create(name);
            } catch (IOException e) {
                throw QmpError.generic("Failed to create snapshot '" + name + "' on device '" + device + "': "
                        + IoError.wrap(e).getMessage());
            }
            taken = snaps;
        }

        @Override
        public void abort() {
            if (taken != null) {
                try {
                    taken.delete(null, args.name());
                } catch (IOException e) {
                    java.util.logging.Logger.getLogger(InternalSnapshotCommands.class.getName()).warning(
                            "Failed to delete snapshot '" + args.name() + "' on device '" + args.device()
                                    + "' in abort: " + e.getMessage());
                }
                taken = null;
            }
        }
    }
}
