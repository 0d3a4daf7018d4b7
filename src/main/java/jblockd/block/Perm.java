package jblockd.block;

import java.util.EnumSet;
import java.util.Set;
import java.util.stream.Collectors;

/**
 * What a user of a node may do with it, QEMU 7.2's {@code BLK_PERM_*} (include/block/block-common.h;
 * 7.x dropped {@code GRAPH_MOD}). A user both <em>needs</em> some and <em>shares</em> some with
 * every other user of the node; {@link NodeGraph#attach} refuses a user whose needs another user
 * does not share, or who does not share what another needs.
 */
public enum Perm {
    /** The user's view of the contents is complete and self-consistent (not an intermediate commit layer). */
    CONSISTENT_READ("consistent read"),
    /** Changing the visible contents. */
    WRITE("write"),
    /** Writing data that leaves the visible contents as they were (copy-on-read). */
    WRITE_UNCHANGED("write unchanged"),
    /** Changing the node's size. */
    RESIZE("resize");

    private final String qemuName;

    Perm(String qemuName) {
        this.qemuName = qemuName;
    }

    public static Set<Perm> none() {
        return EnumSet.noneOf(Perm.class);
    }

    public static Set<Perm> all() {
        return EnumSet.allOf(Perm.class);
    }

    public static Set<Perm> of(Perm first, Perm... rest) {
        return EnumSet.of(first, rest);
    }

    /** block.c bdrv_perm_names(): the names in bit order, joined by ", ". */
    public static String names(Set<Perm> perms) {
        return perms.stream().sorted().map(p -> p.qemuName).collect(Collectors.joining(", "));
    }
}
