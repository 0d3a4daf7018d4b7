package jblockd.compose;

import java.util.Arrays;
import java.util.EnumSet;
import java.util.Locale;
import java.util.Set;
import java.util.stream.Collectors;

/**
 * Every kind of event a schedule can contain, by the name used in
 * {@code -Djblockd.compose.ops=...} and in replays. The generator only picks enabled kinds, so a
 * feature too broken to let other schedules run can be switched off by name while it is fixed
 * (the assertions stay the same). New kinds go here, in {@link ScheduleGenerator}
 * and in {@link ScheduleRunner}.
 */
enum OpKind {
    // guest I/O over NBD
    WRITE, ZERO, TRIM, READ, BLOCK_STATUS, FLUSH,
    // backup
    BACKUP_FULL, BACKUP_TOP, BACKUP_NONE,
    // a checkpoint chain: a full backup with a new bitmap, then incrementals from it
    BACKUP_INCREMENTAL,
    // mirror: ended by complete (pivot) or by cancel after READY
    MIRROR_COMPLETE, MIRROR_CANCEL,
    // stream and commit
    STREAM, COMMIT_INTERMEDIATE, COMMIT_ACTIVE,
    // verbs on the running job
    PAUSE_RESUME, SET_SPEED, CANCEL,
    // run state
    STOP_CONT;

    String wire() {
        return name().toLowerCase(Locale.ROOT).replace('_', '-');
    }

    static OpKind ofWire(String s) {
        return valueOf(s.trim().toUpperCase(Locale.ROOT).replace('-', '_'));
    }

    /** {@code "all"}, or a comma list; a leading {@code -} removes a kind from all ("-trim,-stop-cont"). */
    static Set<OpKind> parse(String spec) {
        if (spec == null || spec.isBlank() || spec.trim().equals("all")) {
            return EnumSet.allOf(OpKind.class);
        }
        String[] parts = spec.split(",");
        boolean subtract = Arrays.stream(parts).allMatch(p -> p.trim().startsWith("-"));
        Set<OpKind> kinds = subtract ? EnumSet.allOf(OpKind.class) : EnumSet.noneOf(OpKind.class);
        for (String p : parts) {
            if (subtract) {
                kinds.remove(ofWire(p.trim().substring(1)));
            } else {
                kinds.add(ofWire(p));
            }
        }
        return kinds;
    }

    static String render(Set<OpKind> kinds) {
        return kinds.stream().map(OpKind::wire).collect(Collectors.joining(","));
    }
}
