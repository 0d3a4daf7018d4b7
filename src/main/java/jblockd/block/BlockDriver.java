package jblockd.block;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.List;
import java.util.Optional;
import java.util.OptionalLong;

/**
 * One layer of the block graph: a protocol (file, null-co), a format (raw, qcow2) or a filter
 * (blkdebug, copy-before-write). Drivers stay small because {@link BlockNode} already
 * guarantees, before calling any method here:
 * <ul>
 *   <li>offsets and lengths are non-negative and inside {@link #length()};</li>
 *   <li>writes, write-zeroes and discards never reach a read-only node;</li>
 *   <li>the node is open (no call after {@link #close()}).</li>
 * </ul>
 * Thread-safety: every method may be called by many threads at once, for the same or
 * overlapping ranges; a driver serialises what it must (metadata updates) itself. All
 * failures of the data path are {@link IoError}s.
 */
public interface BlockDriver {

    /** The driver's QMP name: {@code file}, {@code raw}, {@code qcow2}, {@code blkdebug}, ... */
    String driverName();

    /** Fills {@code dst} completely with the bytes at {@code offset}. */
    void read(long offset, ByteBuffer dst) throws IOException;

    /** Writes all of {@code src} at {@code offset}; with {@code fua} it is durable on return. */
    void write(long offset, ByteBuffer src, boolean fua) throws IOException;

    /**
     * Makes the range read as zeroes. With {@code mayUnmap} the driver may deallocate it
     * (punch a hole, drop the cluster) instead of writing zeroes.
     */
    void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException;

    /** Hints that the range is no longer needed; afterwards its content is unspecified. */
    void discard(long offset, long length) throws IOException;

    /** Makes every completed write durable. */
    void flush() throws IOException;

    /** The virtual size in bytes. */
    long length() throws IOException;

    /**
     * The status of the longest run of equal status that starts at {@code offset}, clipped to
     * {@code length} (the caller asks again from the returned extent's end).
     */
    Extent status(long offset, long length) throws IOException;

    /** Cached by the node at open. */
    Capabilities capabilities();

    /** Flushes what it must and releases the driver's resources (not its children's). */
    void close() throws IOException;

    /** The image file name as QEMU's query commands show it ({@code file} / {@code filename}). */
    String filename();

    /** Child nodes (role name + node), for the graph's use counts and queries. */
    /**
     * The node's users changed; {@code use} is what they need together and all share. A driver
     * over storage other processes open (file: QEMU's image locks) claims it there, or refuses
     * with the conflict; releasing (fewer needs, more shared) does not fail.
     */
    default void applyPermissions(Access use) throws IoError {
    }

    /** Identifies the storage {@link #applyPermissions} locks (the file's device and inode); null: none. */
    default Object storageKey() {
        return null;
    }

    default List<BlockChild> children() {
        return List.of();
    }

    /**
     * What this node needs and shares on {@code child}, given what its own users need and share
     * together ({@code parentUse}) and whether it is {@code writable} (QEMU's bdrv_child_perm,
     * defaulting to block.c bdrv_default_perms()): a filtered child passes the use through, a
     * backing child is read only, any other child holds the image's data and metadata.
     */
    default Access childAccess(BlockChild child, boolean writable, Access parentUse) {
        if (child.node() == filtered()) {
            return Access.passthrough(parentUse);
        }
        if (child.node() == backing()) {
            return Access.forCow(parentUse);
        }
        return Access.forStorage(parentUse, true, writable);
    }

    /** The node this layer reads unallocated ranges from, or null. */
    default BlockNode backing() {
        return null;
    }

    /**
     * Points this layer at a new backing node and records {@code backingFileName} /
     * {@code backingFormat} in the image (null node: drop the backing link). Used by stream,
     * commit and drive-backup's target creation.
     */
    default void setBacking(BlockNode newBacking, String backingFileName, String backingFormat)
            throws IOException {
        throw new IoError(Errno.ENOTSUP, driverName() + " has no backing file");
    }

    /**
     * A hint: start writing what was written so far to storage, without waiting and without
     * making anything durable (only {@link #flush} does). A job that writes a lot calls it as it
     * goes, so the device writes while the job reads and its final flush has little left to do.
     * Drivers that keep no write-back cache of their own pass it to their file; none by default.
     */
    default void startWriteback() throws IOException {
    }

    /** True for formats that can have a backing node (QEMU's BlockDriver.supports_backing). */
    default boolean supportsBacking() {
        return false;
    }

    /**
     * Points this layer at {@code newBacking} (null: none) without touching the image: the
     * backing link of QEMU's bdrv_set_backing_hd(), as blockdev-snapshot attaches the old top
     * below an overlay whose header already names it. Callers change links drained.
     */
    default void linkBacking(BlockNode newBacking) throws IoError {
        throw new IoError(Errno.ENOTSUP, "The overlay does not support backing images");
    }

    /** The image format name for query-block's {@code format}/{@code drv}; the driver name by default. */
    default String formatName() {
        return driverName();
    }

    /** Cluster size for jobs' granularity, or 0 when the driver has none. */
    default int clusterSize() {
        return 0;
    }

    /**
     * True when this node's host file was unlinked (or replaced) after it was opened: I/O still
     * works through the open descriptor, but whatever is written disappears when the node
     * closes. Only protocol drivers over files can tell; everyone else says false.
     */
    default boolean unlinked() {
        return false;
    }

    /**
     * The filtered child of a filter driver (blkdebug's image, copy-before-write's file), or
     * null. QEMU's query commands walk bdrv_filter_or_cow_bs(): a filter's child is shown as
     * its {@code backing-image} and counted in {@code backing_file_depth}.
     */
    default BlockNode filtered() {
        return null;
    }

    /**
     * True for a filter that a job inserted without {@code filter-node-name}: query-block looks
     * through it (block.c bdrv_skip_implicit_filters()), query-named-block-nodes lists it.
     */
    default boolean implicitFilter() {
        return false;
    }

    /**
     * Host bytes the image occupies, for query-block's {@code actual-size} (QEMU's
     * bdrv_get_allocated_file_size()): a protocol driver answers for its file, a format driver
     * for its data child, a filter for its filtered child. Empty when the driver cannot tell
     * (QEMU's -ENOTSUP, e.g. blkdebug), and QEMU then omits the member.
     */
    default OptionalLong allocatedFileSize() throws IOException {
        return OptionalLong.empty();
    }

    /**
     * The {@code dirty-flag} of query-block, which QEMU reports when bdrv_get_info() succeeds:
     * false for drivers without a dirty notion (file, raw), the header's dirty bit for qcow2,
     * empty for drivers without get_info (null-co), which also hides {@code cluster-size}.
     */
    default Optional<Boolean> dirtyFlag() {
        return Optional.of(false);
    }

    /** The backing link recorded in the image header, if the format has one. */
    default Optional<BackingHeader> backingHeader() {
        return Optional.empty();
    }

    /** The {@code format-specific} facts of query-block (qcow2 header features), if any. */
    default Optional<FormatSpecific> formatSpecific() throws IOException {
        return Optional.empty();
    }

    /**
     * The image's own internal snapshots (query-block's {@code image.snapshots},
     * blockdev-snapshot-internal-sync), if the format keeps any; none by default, and then
     * {@link InternalSnapshots#of} looks at the only child.
     */
    default Optional<InternalSnapshots> internalSnapshots() {
        return Optional.empty();
    }

    /**
     * The image's persistent dirty bitmaps (qcow2 v3 bitmaps extension); empty for formats
     * that cannot keep bitmaps.
     */
    default Optional<jblockd.block.bitmap.PersistentBitmapStore> persistentBitmaps() {
        return Optional.empty();
    }

    /**
     * Present when the node is read-write in name but its storage cannot be written (a file
     * opened with {@code auto-read-only} on a read-only file system): the error a user that
     * needs to write, write unchanged or resize gets (block.c bdrv_check_perm through the
     * driver's .bdrv_check_perm).
     */
    default Optional<IoError> writeUnavailable() {
        return Optional.empty();
    }

    /**
     * Changes the node's length to {@code size} (block_resize; QEMU's bdrv_co_truncate with
     * PREALLOC_MODE_OFF): grown space reads as zeroes. Called only on a quiesced, writable node.
     * Drivers that cannot resize refuse with QEMU's text.
     */
    default void truncate(long size) throws IOException {
        throw new IoError(Errno.ENOTSUP, "Image format driver does not support resize");
    }
}
