package jblockd.block;

import java.util.EnumSet;
import java.util.Set;

/**
 * A user's permissions on one node: what it needs and what it lets others do (QEMU's
 * {@code perm} / {@code shared_perm} pair of a BdrvChild). Immutable.
 */
public record Access(Set<Perm> needs, Set<Perm> shares) {
    /** Needs nothing, shares everything: a user that only keeps the node (QEMU: 0, BLK_PERM_ALL). */
    public static final Access PASSIVE = new Access(Perm.none(), Perm.all());

    public Access {
        needs = needs.isEmpty() ? Set.of() : Set.copyOf(EnumSet.copyOf(needs));
        shares = shares.isEmpty() ? Set.of() : Set.copyOf(EnumSet.copyOf(shares));
    }

    public static Access of(Set<Perm> needs, Set<Perm> shares) {
        return new Access(needs, shares);
    }

    /** What {@code this} needs that {@code other} does not share (empty: no conflict that way). */
    Set<Perm> deniedBy(Access other) {
        Set<Perm> denied = Perm.none();
        denied.addAll(needs);
        denied.removeAll(other.shares);
        return denied;
    }

    /**
     * block.c bdrv_filter_default_perms(): a filter forwards its parents' needs and shares to
     * its filtered child unchanged.
     */
    public static Access passthrough(Access parentUse) {
        return parentUse;
    }

    /**
     * block.c bdrv_default_perms_for_cow(): a backing child is only read, and may be written by
     * others only when the parent's users let the parent's contents change anyway.
     */
    public static Access forCow(Access parentUse) {
        Set<Perm> needs = Perm.none();
        if (parentUse.needs().contains(Perm.CONSISTENT_READ)) {
            needs.add(Perm.CONSISTENT_READ);
        }
        Set<Perm> shares = parentUse.shares().contains(Perm.WRITE)
                ? Perm.of(Perm.WRITE, Perm.RESIZE) : Perm.none();
        shares.add(Perm.CONSISTENT_READ);
        shares.add(Perm.WRITE_UNCHANGED);
        return new Access(needs, shares);
    }

    /**
     * block.c bdrv_default_perms_for_storage(): the data (and, with {@code metadata}, metadata)
     * child of a format. A writable format writes its metadata whether or not anyone writes
     * through it, and nobody else may resize the file under it (nor write it, with metadata).
     */
    public static Access forStorage(Access parentUse, boolean metadata, boolean writable) {
        Set<Perm> needs = Perm.none();
        needs.addAll(parentUse.needs());
        Set<Perm> shares = Perm.none();
        shares.addAll(parentUse.shares());
        if (metadata) {
            if (writable) {
                needs.add(Perm.WRITE);
                needs.add(Perm.RESIZE);
            }
            needs.add(Perm.CONSISTENT_READ);
            shares.remove(Perm.WRITE);
            shares.remove(Perm.RESIZE);
        }
        shares.remove(Perm.RESIZE);
        if (needs.contains(Perm.WRITE_UNCHANGED)) {
            needs.add(Perm.WRITE); // copy-on-read may still allocate clusters in the file
        }
        if (needs.contains(Perm.WRITE)) {
            needs.add(Perm.RESIZE); // writes may grow the file past its end
        }
        return new Access(needs, shares);
    }
}
