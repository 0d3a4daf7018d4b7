package jblockd.client;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import jblockd.qapi.ActionCompletionMode;
import jblockd.qapi.TransactionActionKind;

/**
 * Arguments of {@code transaction} (qapi/transaction.json, reference/transactions.md): a list of
 * actions the daemon runs all or nothing, and optionally {@code completion-mode}. Run it with
 * {@link JobCommands#transaction}, which returns a {@link Job} for each backup action.
 * <pre>{@code
 *   List<Job> jobs = qmp.jobs().transaction(Transaction.of()
 *           .driveBackup(DriveBackup.of("drive0", "/b/d0.qcow2").jobId("b0").sync(MirrorSyncMode.FULL))
 *           .driveBackup(DriveBackup.of("drive1", "/b/d1.qcow2").jobId("b1").sync(MirrorSyncMode.FULL))
 *           .completionMode(ActionCompletionMode.GROUPED));
 * }</pre>
 * Both backups then hold their disks at one point in time, and (grouped) one failing cancels
 * the other. Any other action type goes through {@link #action}.
 */
public final class Transaction {
    /** One action: its type, its data, and the backup arguments when it starts a job. */
    record Action(TransactionActionKind type, JsonNode data, JobArgs<?> backup) {
    }

    private final List<Action> actions = new ArrayList<>();
    private ActionCompletionMode completionMode;

    private Transaction() {
    }

    /** An empty transaction (which the daemon accepts and does nothing for). */
    public static Transaction of() {
        return new Transaction();
    }

    /** A {@code drive-backup} action; its job is among the ones the transaction returns. */
    public Transaction driveBackup(DriveBackup args) {
        actions.add(new Action(TransactionActionKind.DRIVE_BACKUP, args.toJson(), args));
        return this;
    }

    /** A {@code blockdev-backup} action; its job is among the ones the transaction returns. */
    public Transaction blockdevBackup(BlockdevBackup args) {
        actions.add(new Action(TransactionActionKind.BLOCKDEV_BACKUP, args.toJson(), args));
        return this;
    }

    /** The {@code abort} action: always fails, rolling back the actions before it. */
    public Transaction abort() {
        actions.add(new Action(TransactionActionKind.ABORT, QmpConnection.MAPPER.createObjectNode(), null));
        return this;
    }

    /**
     * Any action type, with its data: an argument builder, a {@code JsonNode}, a Map or a record,
     * as {@link QmpClient#execute} takes arguments (e.g. {@code block-dirty-bitmap-add} with
     * {@code Map.of("node", "drive0", "name", "b0")}).
     */
    public Transaction action(TransactionActionKind type, Object data) {
        JsonNode d = data instanceof QmpArgs<?> a ? a.toJson()
                : data instanceof JsonNode j ? j : QmpConnection.MAPPER.valueToTree(data);
        actions.add(new Action(type, d, null));
        return this;
    }

    /** {@code individual} (the default) or {@code grouped}. */
    public Transaction completionMode(ActionCompletionMode mode) {
        this.completionMode = mode;
        return this;
    }

    List<Action> actions() {
        return Collections.unmodifiableList(actions);
    }

    /** The {@code arguments} object. */
    public ObjectNode toJson() {
        ObjectNode o = QmpConnection.MAPPER.createObjectNode();
        ArrayNode list = o.putArray("actions");
        for (Action a : actions) {
            list.addObject().put("type", a.type().wire()).set("data", a.data());
        }
        if (completionMode != null) {
            o.putObject("properties").put("completion-mode", completionMode.wire());
        }
        return o;
    }

    @Override
    public String toString() {
        return toJson().toString();
    }
}
