package jblockd.commands;

import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.logging.Level;
import java.util.logging.Logger;

import jblockd.block.BlockNode;
import jblockd.device.DrainedSection;
import jblockd.device.Devices;
import jblockd.qapi.QmpError;

/**
 * The transaction engine (QEMU 7.2 blockdev.c {@code qmp_transaction}, reference/transactions.md
 * §4 and §7): a list of {@link TransactionAction}s is all or nothing.
 * <ol>
 *   <li>One drained section opens over every device above a node any action names: no guest
 *       request is in flight on them from before the first prepare until after the last clean,
 *       so every action sees the disks at one point in time, and every backup's
 *       copy-before-write filter is in place before any guest request goes on.</li>
 *   <li>Prepare in list order. The first that fails ends the loop (later actions are never
 *       looked at): the prepared ones are aborted in reverse order and its error is the
 *       reply.</li>
 *   <li>Otherwise every action commits, in list order (a backup's job starts).</li>
 *   <li>Every prepared action is cleaned, in list order, on both paths; then the drain ends.</li>
 * </ol>
 * With {@code completion-mode: grouped}, an action that does not allow it is refused in its own
 * turn, before its prepare, with QEMU 7.2's text (capital T: 7.2 checks per action).
 * <p>
 * Stateless apart from the devices it drains; each call runs on the caller's thread.
 */
public final class Transactions {
    private static final Logger LOG = Logger.getLogger(Transactions.class.getName());

    private final Devices devices;

    public Transactions(Devices devices) {
        this.devices = devices;
    }

    /**
     * Runs {@code actions} as one transaction; returns when all committed and were cleaned,
     * or throws the first prepare's error after rolling back.
     *
     * @param grouped {@code completion-mode: grouped} (the caller put the jobs into one job
     *                transaction; here it only decides which actions are refused)
     */
    public void run(List<? extends TransactionAction> actions, boolean grouped) throws QmpError {
        Set<BlockNode> nodes = new LinkedHashSet<>();
        for (TransactionAction a : actions) {
            nodes.addAll(a.nodes());
        }
        List<TransactionAction> prepared = new ArrayList<>();
        try (DrainedSection drained = devices.drain(nodes.toArray(BlockNode[]::new))) {
            try {
                for (TransactionAction a : actions) {
                    if (grouped && !a.allowsGroupedCompletion()) {
                        throw QmpError.generic("Action '" + a.kind().wire()
                                + "' does not support Transaction property completion-mode = grouped");
                    }
                    a.prepare();
                    prepared.add(a);
                }
            } catch (QmpError | RuntimeException e) {
                for (TransactionAction a : prepared.reversed()) {
                    step(a, "abort", a::abort);
                }
                for (TransactionAction a : prepared) {
                    step(a, "clean", a::clean);
                }
                throw e;
            }
            for (TransactionAction a : prepared) {
                step(a, "commit", a::commit);
            }
            for (TransactionAction a : prepared) {
                step(a, "clean", a::clean);
            }
        }
    }

    /** commit, abort and clean cannot fail (QEMU's are void): an exception is a bug, logged. */
    private static void step(TransactionAction a, String what, Runnable r) {
        try {
            r.run();
        } catch (RuntimeException | Error e) {
            LOG.log(Level.SEVERE, "transaction action " + a.kind().wire() + ": " + what
                    + " threw, which it must not", e);
        }
    }
}
