package jblockd.qapi;

/**
 * TransactionActionKind (qapi/transaction.json, QEMU 7.2's order): the {@code type} of a
 * transaction action. Each wire name is also the command whose arguments the action's
 * {@code data} carries.
 */
public enum TransactionActionKind implements WireEnum {
    ABORT("abort"),
    BLOCK_DIRTY_BITMAP_ADD("block-dirty-bitmap-add"),
    BLOCK_DIRTY_BITMAP_REMOVE("block-dirty-bitmap-remove"),
    BLOCK_DIRTY_BITMAP_CLEAR("block-dirty-bitmap-clear"),
    BLOCK_DIRTY_BITMAP_ENABLE("block-dirty-bitmap-enable"),
    BLOCK_DIRTY_BITMAP_DISABLE("block-dirty-bitmap-disable"),
    BLOCK_DIRTY_BITMAP_MERGE("block-dirty-bitmap-merge"),
    BLOCKDEV_BACKUP("blockdev-backup"),
    BLOCKDEV_SNAPSHOT("blockdev-snapshot"),
    BLOCKDEV_SNAPSHOT_INTERNAL_SYNC("blockdev-snapshot-internal-sync"),
    BLOCKDEV_SNAPSHOT_SYNC("blockdev-snapshot-sync"),
    /** Carries the feature {@code deprecated} in QEMU 7.2's schema (so does the command). */
    DRIVE_BACKUP("drive-backup");

    private final String wire;

    TransactionActionKind(String wire) {
        this.wire = wire;
    }

    @Override
    public String wire() {
        return wire;
    }

    /** The constant for a wire string, or null when there is none. */
    public static TransactionActionKind fromWire(String s) {
        return WireEnum.lookup(values(), s);
    }
}
