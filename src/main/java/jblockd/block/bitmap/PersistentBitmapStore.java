package jblockd.block.bitmap;

import java.io.IOException;
import java.util.List;

/**
 * What an image format offers for persistent dirty bitmaps (QEMU's
 * {@code bdrv_co_can_store_new_dirty_bitmap}, {@code .bdrv_co_remove_persistent_dirty_bitmap},
 * qcow2_load_dirty_bitmaps / qcow2_store_persistent_dirty_bitmaps). The node owns the in-memory
 * bitmaps; the store only reads and writes the image. A driver without one cannot keep bitmaps
 * ("Can't store persistent bitmaps to NODE: Operation not supported" is the node's text).
 * <p>
 * Life cycle: {@link #loaded()} once after open; on a read-write open the store has already
 * marked every entry {@code in_use} in the image (durably) before the node accepts its first
 * write; {@link #store} at a clean close (and on request) writes every consistent persistent
 * bitmap anew and clears {@code in_use}; inconsistent entries it loaded stay as they were.
 */
public interface PersistentBitmapStore {

    /** The bitmaps found at open, in the image's directory order. */
    List<StoredBitmap> loaded();

    /** True when the image was opened read-only: loaded bitmaps are read-only, store refuses. */
    boolean readOnly();

    /**
     * Checks that one more persistent bitmap {@code name} could be stored, given the
     * {@code alreadyPersistent} names that will be stored with it.
     *
     * @throws BitmapStoreException with QEMU's reason text (e.g. "Cannot store dirty bitmaps in
     *                              qcow2 v2 files", "Maximum number of persistent bitmaps is
     *                              already reached", "Not enough space in the bitmap directory")
     */
    void checkCanStore(String name, long granularity, List<String> alreadyPersistent)
            throws BitmapStoreException;

    /**
     * Removes the bitmap from the image at once (directory rewritten, its clusters freed). A
     * name the image does not hold is not an error: a persistent bitmap added since the open
     * is only stored at close (QEMU's bdrv_remove_persistent_dirty_bitmap says the same).
     */
    void remove(String name) throws IOException;

    /**
     * Writes {@code bitmaps} (all consistent) as the image's persistent bitmaps, replacing the
     * consistent ones stored before, with {@code in_use} clear; made durable before returning.
     * The node calls it once, at a clean close of a read-write node, with its consistent
     * persistent bitmaps in its list order (newest first, as QEMU iterates them) — possibly none,
     * so that entries marked {@code in_use} at open are settled.
     */
    void store(List<StoredBitmap> bitmaps) throws IOException;

    /** Refusal of a new persistent bitmap; the message is QEMU's reason (without the prefix). */
    final class BitmapStoreException extends Exception {
        public BitmapStoreException(String message) {
            super(message);
        }
    }
}
