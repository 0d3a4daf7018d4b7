package jblockd.commands;

import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;

import jblockd.device.Devices;
import jblockd.job.JobTxn;
import jblockd.qapi.ActionCompletionMode;
import jblockd.qapi.ErrorClass;
import jblockd.qapi.QmpError;
import jblockd.qapi.TransactionActionKind;
import jblockd.qmp.CommandGroup;
import jblockd.qmp.CommandRegistry;
import jblockd.qmp.QmpJson;

/**
 * {@code transaction} (QEMU 7.2 qapi/transaction.json, blockdev.c qmp_transaction;
 * reference/transactions.md): a list of actions run all or nothing by {@link Transactions}.
 * <p>
 * Arguments are validated against the schema before anything happens: every action's
 * {@code data} is the argument type of the command it names, so its errors carry the path
 * ({@code Parameter 'actions[1].data.bogus' is unexpected}) and the whole transaction is refused
 * with nothing prepared. Each action's data is then bound to the very record its command takes
 * ({@link QmpJson#bind}, the commands' own conversion) and handed to the action type's factory.
 * <p>
 * Action types: {@code abort} (here), the ones registered with {@link #registerAction}
 * (drive-backup and blockdev-backup by {@link BackupCommands#registerActions}), and every other
 * type of QEMU's enum refused in its own turn with {@code Action 'X' is not supported by jblockd
 * yet} (class CommandNotFound, as its command is not there either).
 * <p>
 * {@code completion-mode: grouped} makes one {@link JobTxn} for the transaction, which every
 * backup job joins: the job layer ties their ends together (transactions.md §6.2).
 */
public final class TransactionCommands implements CommandGroup {

    public record TransactionArgs(List<ActionArg> actions, TransactionProperties properties) {
    }

    /** One element of {@code actions}: the schema has checked {@code data} against the type. */
    public record ActionArg(TransactionActionKind type, JsonNode data) {
    }

    public record TransactionProperties(ActionCompletionMode completionMode) {
    }

    /**
     * Makes one action from its arguments (the record its command takes).
     *
     * @param <A> the argument record
     */
    @FunctionalInterface
    public interface ActionFactory<A> {
        /**
         * @param txn the job transaction of a grouped transaction, which the action's jobs join;
         *            null when each job ends on its own
         */
        TransactionAction create(A args, JobTxn txn) throws QmpError;
    }

    private record Registered<A>(Class<A> argsType, ActionFactory<A> factory) {
        TransactionAction create(QmpJson json, JsonNode data, JobTxn txn) throws QmpError {
            return factory.create(json.bind(data, argsType), txn);
        }
    }

    private final Transactions transactions;
    private final QmpJson json;
    private final Map<TransactionActionKind, Registered<?>> kinds = new EnumMap<>(TransactionActionKind.class);

    public TransactionCommands(Devices devices, QmpJson json) {
        this.transactions = new Transactions(devices);
        this.json = json;
        registerAction(TransactionActionKind.ABORT, Void.class, (a, txn) -> new AbortAction());
    }

    /**
     * Makes {@code kind} a supported action: {@code data} is bound to {@code argsType} (the
     * record of the command of the same name) and given to {@code factory}. Call before the
     * daemon serves QMP.
     */
    public <A> void registerAction(TransactionActionKind kind, Class<A> argsType, ActionFactory<A> factory) {
        if (kinds.putIfAbsent(kind, new Registered<>(argsType, factory)) != null) {
            throw new IllegalStateException("transaction action registered twice: " + kind.wire());
        }
    }

    @Override
    public void register(CommandRegistry r) {
        r.register("transaction", TransactionArgs.class, a -> {
            transaction(a);
            return null;
        });
    }

    public void transaction(TransactionArgs a) throws QmpError {
        boolean grouped = a.properties() != null
                && a.properties().completionMode() == ActionCompletionMode.GROUPED;
        // QEMU qmp_transaction(): the job transaction exists only when the jobs end together
        JobTxn txn = grouped ? new JobTxn() : null;
        List<TransactionAction> actions = new ArrayList<>();
        for (ActionArg arg : a.actions()) {
            Registered<?> reg = kinds.get(arg.type());
            actions.add(reg == null ? new UnsupportedAction(arg.type()) : reg.create(json, arg.data(), txn));
        }
        transactions.run(actions, grouped);
    }

    /** QEMU abort_prepare(): always fails, so that everything before it is rolled back. */
    private static final class AbortAction implements TransactionAction {
        @Override
        public TransactionActionKind kind() {
            return TransactionActionKind.ABORT;
        }

        /** QEMU 7.2 does not check the completion mode for abort: its own error wins. */
        @Override
        public boolean allowsGroupedCompletion() {
            return true;
        }

        @Override
        public void prepare() throws QmpError {
            throw QmpError.generic("Transaction aborted using Abort action");
        }
    }

    /**
     * An action type of QEMU's enum that jblockd cannot perform yet (no such command either):
     * refused in its turn, never ignored. In grouped mode the completion-mode refusal comes
     * first, as QEMU's prepare of these types checks it first.
     */
    private record UnsupportedAction(TransactionActionKind kind) implements TransactionAction {
        @Override
        public void prepare() throws QmpError {
            throw new QmpError(ErrorClass.COMMAND_NOT_FOUND,
                    "Action '" + kind.wire() + "' is not supported by jblockd yet");
        }
    }
}
