package jblockd.job.backup;

import java.util.Objects;
import java.util.logging.Level;
import java.util.logging.Logger;

import jblockd.block.bitmap.BitmapException;
import jblockd.block.bitmap.BlockDirtyBitmap;
import jblockd.block.cbw.BlockCopy;
import jblockd.qapi.BitmapSyncMode;

/**
 * A backup's sync bitmap ({@code bitmap} with {@code bitmap-mode}), frozen for the job: busy,
 * its bits fixed at the job's point in time, guest writes since recorded in its successor
 * (QEMU backup_job_create → bdrv_dirty_bitmap_create_successor). At the job's end it is settled
 * once by its mode, as QEMU's backup_cleanup_sync_bitmap() does:
 * <ul>
 *   <li>the job succeeded (or mode {@code always}) and mode is not {@code never}: abdicate, the
 *       bitmap is the writes made since the job started;</li>
 *   <li>otherwise: reclaim, the bitmap is its old bits and the writes since;</li>
 *   <li>failed with mode {@code always}: what the job did not copy is merged in as well.</li>
 * </ul>
 * A job aborted by its group (completion-mode grouped), cancelled, or rolled back with its
 * transaction counts as failed.
 */
public final class SyncBitmap {
    private static final Logger LOG = Logger.getLogger(SyncBitmap.class.getName());

    private final BlockDirtyBitmap bitmap;
    private final BitmapSyncMode mode;
    private boolean settled;

    private SyncBitmap(BlockDirtyBitmap bitmap, BitmapSyncMode mode) {
        this.bitmap = bitmap;
        this.mode = mode;
    }

    /** Freezes {@code bitmap} for a job; call inside the drained section of the job's start. */
    public static SyncBitmap freeze(BlockDirtyBitmap bitmap, BitmapSyncMode mode) throws BitmapException {
        bitmap.owner().freeze(bitmap);
        return new SyncBitmap(Objects.requireNonNull(bitmap), mode);
    }

    public BlockDirtyBitmap bitmap() {
        return bitmap;
    }

    /**
     * Unfreezes the bitmap of a job that was never made (its prepare failed later): reclaimed,
     * whatever the mode, since no backup happened.
     */
    public synchronized void release() {
        if (settled) {
            return;
        }
        settled = true;
        try {
            bitmap.owner().reclaim(bitmap);
        } catch (BitmapException e) {
            LOG.log(Level.SEVERE, "backup: releasing the sync bitmap failed (a bug)", e);
        }
    }

    /** Settles the bitmap by its mode; only the first call acts. Cannot fail (QEMU's is void). */
    public synchronized void settle(boolean success, BlockCopy copy) {
        if (settled) {
            return;
        }
        settled = true;
        boolean sync = (success || mode == BitmapSyncMode.ALWAYS) && mode != BitmapSyncMode.NEVER;
        try {
            BlockDirtyBitmap bm = sync ? bitmap.owner().abdicate(bitmap) : bitmap.owner().reclaim(bitmap);
            if (!success && mode == BitmapSyncMode.ALWAYS) {
                copy.markRemaining(bm.bits());
            }
        } catch (BitmapException e) {
            // the bitmap was frozen by this job and nobody else can touch a frozen bitmap
            LOG.log(Level.SEVERE, "backup: settling the sync bitmap failed (a bug)", e);
        }
    }
}
