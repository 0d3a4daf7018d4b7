package jblockd.client;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.Map;
import jblockd.qapi.ActionCompletionMode;
import jblockd.qapi.MirrorSyncMode;
import jblockd.qapi.TransactionActionKind;
import org.junit.jupiter.api.Test;

/** The {@code transaction} argument builder: QAPI's shape, actions in the order given. */
class TransactionTest {
    @Test
    void buildsActionsInOrderWithTheirDataAndTheCompletionMode() {
        // an ordered map: Map.of's iteration order is unspecified
        Map<String, Object> add = new java.util.LinkedHashMap<>();
        add.put("node", "drive0");
        add.put("name", "b0");
        Transaction t = Transaction.of()
                .action(TransactionActionKind.BLOCK_DIRTY_BITMAP_ADD, add)
                .blockdevBackup(BlockdevBackup.of("drive0", "tgt0", MirrorSyncMode.FULL).jobId("j0"))
                .driveBackup(DriveBackup.of("drive1", "/b/d1.raw").sync(MirrorSyncMode.TOP).speed(5))
                .abort()
                .completionMode(ActionCompletionMode.GROUPED);
        // members in the order set, as the builders keep them
        assertThat(t.toString()).isEqualTo("{\"actions\":["
                + "{\"type\":\"block-dirty-bitmap-add\",\"data\":{\"node\":\"drive0\",\"name\":\"b0\"}},"
                + "{\"type\":\"blockdev-backup\",\"data\":{\"device\":\"drive0\",\"target\":\"tgt0\","
                + "\"sync\":\"full\",\"job-id\":\"j0\"}},"
                + "{\"type\":\"drive-backup\",\"data\":{\"device\":\"drive1\",\"target\":\"/b/d1.raw\","
                + "\"sync\":\"top\",\"speed\":5}},"
                + "{\"type\":\"abort\",\"data\":{}}],"
                + "\"properties\":{\"completion-mode\":\"grouped\"}}");
        assertThat(t.actions()).extracting(a -> a.backup() != null).containsExactly(false, true, true, false);
    }

    @Test
    void withoutCompletionModeThereAreNoProperties() {
        assertThat(Transaction.of().abort().toJson().has("properties")).isFalse();
        assertThat(Transaction.of().toJson().get("actions")).isEmpty();
    }
}
