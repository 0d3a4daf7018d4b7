package jblockd.block;

import java.io.IOException;
import java.util.List;
import java.util.Optional;

/**
 * A driver's internal snapshots (QEMU 7.2's {@code bdrv_snapshot_list/create/delete} driver
 * callbacks): named read-only views the image itself keeps, as rbd's RBD snapshots. A driver
 * that has them returns one from {@link BlockDriver#internalSnapshots()}; a node whose driver
 * has none forwards to its only child ({@link #of}, QEMU's {@code bdrv_snapshot_fallback}), so a
 * raw node over rbd snapshots the RBD image.
 * <p>
 * Callers drain the node first (QEMU's blockdev-snapshot-internal-sync does); implementations
 * are thread-safe.
 */
public interface InternalSnapshots {

    /** The snapshots, oldest first, as query-block's {@code image.snapshots} shows them. */
    List<SnapshotInfo> list() throws IOException;

    /**
     * Takes a snapshot named {@code name} (not empty, not yet taken: the caller checked).
     *
     * @throws IoError whose message is the reason alone (strerror or the driver's own text):
     *                 the caller words it as QEMU does, naming the snapshot and device
     */
    void create(String name) throws IOException;

    /**
     * Deletes the snapshot the caller found by {@code id} and/or {@code name}, passed on as the
     * user gave them (QEMU's bdrv_snapshot_delete does; a driver may refuse one of them).
     *
     * @throws IoError whose message is the whole QMP error text
     */
    void delete(String id, String name) throws IOException;

    /**
     * block/snapshot.c bdrv_snapshot_fallback(): the internal snapshots of {@code node}'s
     * driver, or else of its only child (raw over its file, a pass-through filter over its
     * image), recursively; empty when a node on the way has none and not exactly one child (a
     * qcow2 image keeps its own; copy-before-write also has a target child).
     */
    static Optional<InternalSnapshots> of(BlockNode node) {
        for (BlockNode n = node; n != null; ) {
            Optional<InternalSnapshots> own = n.driver().internalSnapshots();
            if (own.isPresent()) {
                return own;
            }
            List<BlockChild> children = n.driver().children();
            if (children.size() != 1) {
                return Optional.empty();
            }
            n = children.getFirst().node();
        }
        return Optional.empty();
    }
}
