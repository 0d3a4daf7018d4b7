package jblockd.client;

/**
 * Arguments of {@code block-dirty-bitmap-add} (qapi BlockDirtyBitmapAdd): a new bitmap
 * {@code name} on {@code node} (a node name or a device name). Unset members take the daemon's
 * defaults: granularity from the cluster size (clamped to 4 KiB..64 KiB, else 64 KiB), not
 * persistent, enabled.
 */
public final class BitmapAdd extends QmpArgs<BitmapAdd> {
    private BitmapAdd(String node, String name) {
        set("node", node);
        set("name", name);
    }

    public static BitmapAdd of(String node, String name) {
        return new BitmapAdd(node, name);
    }

    /** Bytes per bit: a power of two from 512 to 2^31. */
    public BitmapAdd granularity(long bytes) {
        return set("granularity", bytes);
    }

    /** Stored in the image (qcow2 v3) at a clean close. */
    public BitmapAdd persistent(boolean b) {
        return set("persistent", b);
    }

    /** Created disabled: it keeps its (no) bits and records nothing until enabled. */
    public BitmapAdd disabled(boolean b) {
        return set("disabled", b);
    }
}
