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
 * Beyond QEMU, {@link #sync} arms a crash record (docs/qcow2-bitmaps.md) that {@link #beforeWrite}
 * keeps up to date; both default to doing nothing (no crash record: QEMU's behaviour).
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
     * Bitmaps not in the image yet are appended to its directory in list order (QEMU appends in
     * the node's list order). No data-changing request may be in flight during the call; one
     * that comes after it first marks the stored bitmaps {@code in_use} again (QEMU's
     * qcow2_reopen_bitmaps_rw), so a stored image never claims stale bitmaps consistent.
     * The node calls it once, at a clean close of a read-write node, with its consistent
     * persistent bitmaps in its list order (newest first, as QEMU iterates them) — possibly none,
     * so that entries marked {@code in_use} at open are settled.
     */
    void store(List<StoredBitmap> bitmaps) throws IOException;

    /**
     * The write-intent hook of the crash record (see {@link #sync}): called before every
     * data-changing request (write, write-zeroes, discard) reaches the image, with its guest
     * range. Cheap and lock-free when the range's region is already marked on disk; otherwise it
     * marks the region durably (one small write and a flush) before returning, and the request
     * may proceed only after it returned. Thread-safe. A format driver that offers a crash record
     * calls it itself on each of its data paths, so that no request can bypass it (qcow2 does);
     * a second call for the same request is a cheap no-op.
     */
    default void beforeWrite(long offset, long length) throws IOException {
    }

    /**
     * jblockd's crash record (beyond QEMU; docs/qcow2-bitmaps.md): writes {@code bitmaps}, every
     * persistent bitmap of the node with its current bits, into the image as bitmaps that stay
     * {@code in_use}, with data the store keeps a superset of every later data-changing request
     * ({@link #beforeWrite}), so that after a crash the next open loads them as consistent. The
     * first call arms the record; until then a crash leaves inconsistent bitmaps, as QEMU's.
     * <p>
     * Once armed, the caller calls it again, before reporting success, after anything that sets
     * bits other than by recording a request (a merge into a persistent bitmap, a job giving bits
     * back), adds a persistent bitmap or starts one recording (enable): the record only knows
     * the bits it was given and the requests it saw. It may call it at any other time to replace
     * coarse regions by the fine bits (a region touched since the previous call stays coarse).
     * {@code bitmaps} must hold every request that completed before the call; requests that
     * reach the store while it runs wait for it. {@code enabled} means recording (a bitmap
     * frozen by a job whose successor records counts as enabled). Bitmaps in the image but not
     * in the list stay as they are, untracked. Does nothing when the image is read-only.
     */
    default void sync(List<StoredBitmap> bitmaps) throws IOException {
    }

    /**
     * Refusal of a new persistent bitmap. Usually the message is QEMU's reason, to which the node
     * adds its prefix ("Can't make bitmap 'x' persistent in 'node': "); a message that QEMU
     * reports alone (a name clash: "Bitmap already exists: x") says so with {@link #prefixed()}.
     */
    final class BitmapStoreException extends Exception {
        private final boolean prefixed;

        public BitmapStoreException(String message) {
            this(message, true);
        }

        public BitmapStoreException(String message, boolean prefixed) {
            super(message);
            this.prefixed = prefixed;
        }

        /** False when the message is the whole error text, to be reported without the node's prefix. */
        public boolean prefixed() {
            return prefixed;
        }
    }
}
