package jblockd.nbd.server;

import java.util.ArrayList;
import java.util.List;
import java.util.Objects;

import jblockd.nbd.proto.Nbd;

/**
 * The meta contexts one LIST_/SET_META_CONTEXT selects on an export (QEMU nbd/server.c
 * {@code NBDExportMetaContexts}), and the rules that turn queries into a selection
 * ({@code nbd_meta_base_query}, {@code nbd_meta_qemu_query}). Immutable.
 * <p>
 * Context ids are QEMU's: {@code base:allocation} 0, {@code qemu:allocation-depth} 1,
 * {@code qemu:dirty-bitmap:NAME} 2 + the bitmap's index in the export. Replies and
 * BLOCK_STATUS chunks come in that order, whatever the order of the queries.
 * <p>
 * Query rules (NetworkBlockDevice/nbd doc/proto.md "Metadata querying", as QEMU 7.2 applies
 * them):
 * <ul>
 *   <li>no query at all: LIST selects every context of the export, SET selects nothing;</li>
 *   <li>{@code base:allocation} and {@code qemu:allocation-depth} (when the export offers it)
 *   select themselves; {@code qemu:dirty-bitmap:NAME} the first exported bitmap of that
 *   name;</li>
 *   <li>the namespace wildcards {@code base:}, {@code qemu:}, {@code qemu:dirty-bitmap:} select
 *   what they cover, for LIST only (in SET they select nothing);</li>
 *   <li>anything else (another namespace, an unknown qemu context, a bitmap the export lacks)
 *   is skipped without an error.</li>
 * </ul>
 */
public final class MetaContexts {
    public static final int ID_BASE_ALLOCATION = 0;
    public static final int ID_ALLOCATION_DEPTH = 1;
    /** The first bitmap's id; bitmap {@code i} of the export is {@code ID_DIRTY_BITMAP + i}. */
    public static final int ID_DIRTY_BITMAP = 2;

    public static final String ALLOCATION_DEPTH = "qemu:allocation-depth";
    public static final String DIRTY_BITMAP_PREFIX = "qemu:dirty-bitmap:";

    /** One selected context: its id and its name. */
    public record Context(int id, String name) {
    }

    /** No context selected (before any SET, after a failed one, or on another export). */
    public static final MetaContexts NONE = new MetaContexts(null, List.of());

    private final NbdExport export;
    private final List<Context> contexts;

    private MetaContexts(NbdExport export, List<Context> contexts) {
        this.export = export;
        this.contexts = List.copyOf(contexts);
    }

    /**
     * The selection {@code queries} make on {@code export}; {@code list} for LIST_META_CONTEXT
     * (wildcards and the empty query list select), false for SET_META_CONTEXT.
     */
    public static MetaContexts select(NbdExport export, boolean list, List<String> queries) {
        Objects.requireNonNull(export);
        List<String> names = bitmapNames(export);
        boolean base = false;
        boolean depth = false;
        boolean[] bitmaps = new boolean[names.size()];
        if (list && queries.isEmpty()) {
            base = true;
            depth = export.allocationDepth();
            java.util.Arrays.fill(bitmaps, true);
        }
        for (String q : queries) {
            if (q.startsWith("base:")) {
                String rest = q.substring("base:".length());
                if (rest.equals("allocation") || (list && rest.isEmpty())) {
                    base = true;
                }
            } else if (q.startsWith("qemu:")) {
                String rest = q.substring("qemu:".length());
                if (rest.isEmpty()) {
                    if (list) {
                        depth |= export.allocationDepth();
                        java.util.Arrays.fill(bitmaps, true);
                    }
                } else if (rest.equals("allocation-depth")) {
                    depth |= export.allocationDepth();
                } else if (q.startsWith(DIRTY_BITMAP_PREFIX)) {
                    String bm = q.substring(DIRTY_BITMAP_PREFIX.length());
                    if (bm.isEmpty()) {
                        if (list) {
                            java.util.Arrays.fill(bitmaps, true);
                        }
                    } else {
                        int i = names.indexOf(bm);
                        if (i >= 0) {
                            bitmaps[i] = true;
                        }
                    }
                }
            }
        }
        List<Context> out = new ArrayList<>();
        if (base) {
            out.add(new Context(ID_BASE_ALLOCATION, Nbd.BASE_ALLOCATION));
        }
        if (depth) {
            out.add(new Context(ID_ALLOCATION_DEPTH, ALLOCATION_DEPTH));
        }
        for (int i = 0; i < bitmaps.length; i++) {
            if (bitmaps[i]) {
                out.add(new Context(ID_DIRTY_BITMAP + i, DIRTY_BITMAP_PREFIX + names.get(i)));
            }
        }
        return new MetaContexts(export, out);
    }

    private static List<String> bitmapNames(NbdExport export) {
        List<String> names = new ArrayList<>();
        export.bitmaps().forEach(b -> names.add(b.name()));
        return names;
    }

    /** The selected contexts in reply order (ascending ids). */
    public List<Context> contexts() {
        return contexts;
    }

    /**
     * The selection as it applies to a client that entered transmission on {@code chosen}
     * (QEMU's nbd_check_meta_export): nothing, if it was made on another export.
     */
    public MetaContexts forExport(NbdExport chosen) {
        return chosen == export ? this : NONE;
    }

    public boolean isEmpty() {
        return contexts.isEmpty();
    }

    @Override
    public String toString() {
        return "MetaContexts" + contexts;
    }
}
