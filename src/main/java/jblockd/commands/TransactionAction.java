package jblockd.commands;

import java.util.List;

import jblockd.block.BlockNode;
import jblockd.qapi.QmpError;
import jblockd.qapi.TransactionActionKind;

/**
 * One action of a {@code transaction} (QEMU 7.2 blockdev.c {@code BlkActionOps}): what it does
 * is split so that a list of them is all or nothing ({@link Transactions}).
 * <ul>
 *   <li>{@link #prepare} does everything that can fail, and nothing that cannot be undone: a
 *       backup creates its job (left {@code created}) and puts its filter in place; a bitmap
 *       operation keeps what it changes. When it throws, it has undone its own partial work
 *       (the engine calls nothing else on it).</li>
 *   <li>{@link #commit} makes a prepared action take effect (a backup's job starts); it cannot
 *       fail.</li>
 *   <li>{@link #abort} undoes a prepared action, when a later one failed; it cannot fail.</li>
 *   <li>{@link #clean} runs after commit or abort, for every prepared action; it cannot fail.</li>
 * </ul>
 * commit, abort and clean are void, as QEMU's are: an exception from them is a bug, which the
 * engine logs and goes on. All four run on the QMP thread of the command, inside one drained
 * section over every node the actions named ({@link #nodes}), in list order (abort in reverse).
 *
 * <h2>Adding an action type</h2>
 * Implement this interface for the command (reuse the command's own code: drive-backup is itself
 * a transaction of one {@link BackupAction}), and register it with
 * {@link TransactionCommands#registerAction}, giving the argument record the command itself
 * takes. A type without a registered action is refused in its prepare, with a clear error.
 */
public interface TransactionAction {

    /** Its {@code type}, which is also the name of the command it performs. */
    TransactionActionKind kind();

    /**
     * True when it may run in a transaction with {@code completion-mode: grouped}: the backups,
     * whose jobs then form one job transaction, and {@code abort}. Every other action is refused
     * there, in its own turn, with QEMU 7.2's text.
     */
    default boolean allowsGroupedCompletion() {
        return false;
    }

    /**
     * The nodes its prepare will read or change, as far as its names resolve now (a name that
     * does not is its prepare's error to report): the transaction drains every device above them
     * before any prepare, so all its actions share one guest-visible point in time.
     */
    default List<BlockNode> nodes() {
        return List.of();
    }

    /** Checks and does the revertible part. Throws the error the transaction replies with. */
    void prepare() throws QmpError;

    /** Makes a prepared action take effect. Cannot fail. */
    default void commit() {
    }

    /** Undoes a prepared action (a later action's prepare failed). Cannot fail. */
    default void abort() {
    }

    /** After commit or abort: releases what prepare held for the transaction. Cannot fail. */
    default void clean() {
    }
}
