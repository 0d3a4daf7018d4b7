package jblockd.block.blkdebug;

import java.util.Set;

import jblockd.block.Errno;
import jblockd.block.IoError;

/**
 * One {@code [set-state]} rule (blkdebug.c ACTION_SET_STATE): when its event happens in
 * {@code state} (0: any state), the blkdebug state becomes {@code newState}. The event stands for
 * request kinds as in {@link Rule}. Each request is one event step: inject rules are matched
 * against the state before the step, then the state moves (blkdebug_debug_event() also
 * activates injections with the old state and applies {@code new_state} at the end).
 */
record StateRule(String event, Set<Rule.Op> ops, int state, int newState) {
    static StateRule of(String event, Long state, Long newState) throws IoError {
        Set<Rule.Op> ops = Rule.eventOps(event);
        if (newState == null) {
            throw new IoError(Errno.EINVAL, "Parameter 'new_state' is missing");
        }
        try {
            return new StateRule(event, ops, state == null ? 0 : Math.toIntExact(state),
                    Math.toIntExact(newState));
        } catch (ArithmeticException e) {
            throw new IoError(Errno.EINVAL, "Parameter 'new_state' or 'state' expects a 32-bit number");
        }
    }

    boolean fires(Rule.Op op, int currentState) {
        return ops.contains(op) && (state == 0 || state == currentState);
    }
}
