package jblockd.client;

/**
 * Arguments of {@code blockdev-snapshot-sync}: creates {@code snapshot-file} (qcow2 unless told
 * otherwise, backed by the node's image) and puts it on top of the node, which becomes read-only.
 *
 * <pre>{@code
 * qmp.block().blockdevSnapshotSync(BlockdevSnapshotSync.ofNode("disk", "/images/ov1.qcow2")
 *         .snapshotNodeName("ov1"));
 * }</pre>
 */
public final class BlockdevSnapshotSync extends QmpArgs<BlockdevSnapshotSync> {

    private BlockdevSnapshotSync(String snapshotFile) {
        set("snapshot-file", snapshotFile);
    }

    /** A snapshot of the node {@code nodeName} ({@code snapshot-node-name} is then required). */
    public static BlockdevSnapshotSync ofNode(String nodeName, String snapshotFile) {
        return new BlockdevSnapshotSync(snapshotFile).set("node-name", nodeName);
    }

    /** A snapshot of the device {@code device}'s top node. */
    public static BlockdevSnapshotSync ofDevice(String device, String snapshotFile) {
        return new BlockdevSnapshotSync(snapshotFile).set("device", device);
    }

    /** The new overlay's node name. */
    public BlockdevSnapshotSync snapshotNodeName(String name) {
        return set("snapshot-node-name", name);
    }

    /** The overlay's format (default qcow2). */
    public BlockdevSnapshotSync format(String format) {
        return set("format", format);
    }

    /** {@code existing}: open an image already there instead of creating it. */
    public BlockdevSnapshotSync existing() {
        return set("mode", "existing");
    }
}
