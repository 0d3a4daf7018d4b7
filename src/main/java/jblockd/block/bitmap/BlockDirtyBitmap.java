package jblockd.block.bitmap;

import java.util.EnumSet;
import java.util.Set;

/**
 * One dirty bitmap of a node (QEMU's BdrvDirtyBitmap): its bits plus the states QEMU keeps
 * beside them. Named bitmaps are the QMP ones; anonymous ones (a frozen bitmap's successor, a
 * job's copy bitmap) have no name and are shown without one.
 * <ul>
 *   <li>{@code enabled}: writes to the node set bits (a disabled bitmap keeps its bits);</li>
 *   <li>{@code busy}: frozen by a job ({@link NodeBitmaps#freeze}) or exported; QMP refuses it;</li>
 *   <li>{@code persistent}: stored in the image at a clean close;</li>
 *   <li>{@code readonly}: persistent, and its image is read-only (opened or reopened so): must
 *   not change; a reopen read-write lifts it ({@link NodeBitmaps#reattachStore});</li>
 *   <li>{@code inconsistent}: loaded with {@code in_use} set: no usable bits, only removable;</li>
 *   <li>{@code successor}: while frozen, the anonymous bitmap that records in its place.</li>
 * </ul>
 * Every state change goes through the owning {@link NodeBitmaps} (its monitor); the getters
 * read volatile fields and may be called from any thread.
 */
public final class BlockDirtyBitmap {

    /** What an operation requires of a bitmap (QEMU's BDRV_BITMAP_* flags of bdrv_dirty_bitmap_check). */
    public enum Check {
        /** not busy (frozen by a job or exported) */
        BUSY,
        /** not loaded read-only */
        READONLY,
        /** not inconsistent */
        INCONSISTENT;

        /** BDRV_BITMAP_DEFAULT: clear, merge target, backup with a bitmap that will be written. */
        public static final Set<Check> DEFAULT = EnumSet.allOf(Check.class);
        /** BDRV_BITMAP_ALLOW_RO: enable, disable, merge source. */
        public static final Set<Check> ALLOW_RO = EnumSet.of(BUSY, INCONSISTENT);
        /** remove: busy and read-only bitmaps stay, an inconsistent one may go (the way out). */
        public static final Set<Check> REMOVE = EnumSet.of(BUSY, READONLY);
    }

    /** What query-named-block-nodes shows of a bitmap (qapi BlockDirtyInfo). */
    public record Info(String name, boolean recording, boolean persistent, boolean busy, long granularity,
                       long count, boolean inconsistent) {
    }

    private final NodeBitmaps owner;
    private final DirtyBitmap bits;
    private volatile boolean readonly;
    private final boolean inconsistent;
    private volatile String name;
    private volatile boolean disabled;
    private volatile boolean busy;
    private volatile boolean persistent;
    private volatile BlockDirtyBitmap successor;

    BlockDirtyBitmap(NodeBitmaps owner, String name, DirtyBitmap bits, boolean disabled, boolean persistent,
                     boolean readonly, boolean inconsistent) {
        this.owner = owner;
        this.name = name;
        this.bits = bits;
        this.disabled = disabled;
        this.persistent = persistent;
        this.readonly = readonly;
        this.inconsistent = inconsistent;
    }

    public NodeBitmaps owner() {
        return owner;
    }

    /** The name, or null for an anonymous bitmap. */
    public String name() {
        return name;
    }

    /**
     * The bits. A job may read and iterate them; only the owner changes them for QMP, and a
     * frozen bitmap's bits do not change until it is abdicated or reclaimed.
     */
    public DirtyBitmap bits() {
        return bits;
    }

    public long granularity() {
        return bits.granularity();
    }

    /** The byte length the bitmap covers (QEMU's bitmap->size, compared by merge). */
    public long size() {
        return bits.length();
    }

    /** Set bits times the granularity, not clipped at the end (query's {@code count}). */
    public long count() {
        return bits.count();
    }

    /** Not disabled: writes set its bits (a frozen bitmap is disabled; its successor records). */
    public boolean enabled() {
        return !disabled;
    }

    /**
     * query's {@code recording}: the bitmap records, or it is frozen and its successor records
     * (block/dirty-bitmap.c bdrv_dirty_bitmap_recording()).
     */
    public boolean recording() {
        BlockDirtyBitmap s = successor;
        return !disabled || (s != null && !s.disabled);
    }

    public boolean busy() {
        return busy;
    }

    public boolean persistent() {
        return persistent;
    }

    public boolean readonly() {
        return readonly;
    }

    /** Only the owner's reopen changes it, under the owner's monitor. */
    void setReadonly(boolean readonly) {
        this.readonly = readonly;
    }

    public boolean inconsistent() {
        return inconsistent;
    }

    /** The successor while frozen, else null. */
    public BlockDirtyBitmap successor() {
        return successor;
    }

    public boolean frozen() {
        return successor != null;
    }

    public Info info() {
        return new Info(name, recording(), persistent, busy, granularity(), count(), inconsistent);
    }

    /**
     * block/dirty-bitmap.c bdrv_dirty_bitmap_check(): busy, then read-only, then inconsistent,
     * each with QEMU's text (the inconsistent one without the hint line QMP does not send).
     */
    public void check(Set<Check> checks) throws BitmapException {
        if (checks.contains(Check.BUSY) && busy) {
            throw new BitmapException("Bitmap '" + name + "' is currently in use by another operation and cannot be used");
        }
        if (checks.contains(Check.READONLY) && readonly) {
            throw new BitmapException("Bitmap '" + name + "' is readonly and cannot be modified");
        }
        if (checks.contains(Check.INCONSISTENT) && inconsistent) {
            throw new BitmapException("Bitmap '" + name + "' is inconsistent and cannot be used");
        }
    }

    // ---- state changes, called by the owner under its monitor ----

    void setName(String n) {
        name = n;
    }

    void setDisabled(boolean d) {
        disabled = d;
    }

    void setBusy(boolean b) {
        busy = b;
    }

    void setPersistent(boolean p) {
        persistent = p;
    }

    void setSuccessor(BlockDirtyBitmap s) {
        successor = s;
    }

    @Override
    public String toString() {
        return (name == null ? "(anonymous)" : "'" + name + "'") + " granularity " + granularity() + " count " + count()
                + (disabled ? " disabled" : "") + (busy ? " busy" : "") + (persistent ? " persistent" : "");
    }
}
