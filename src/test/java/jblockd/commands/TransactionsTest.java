package jblockd.commands;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicReference;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.DriverRegistry;
import jblockd.block.NodeGraph;
import jblockd.device.Device;
import jblockd.device.Devices;
import jblockd.device.GuestIo;
import jblockd.device.RunState;
import jblockd.job.GatedDriver;
import jblockd.job.RecordingEvents;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.QmpError;
import jblockd.qapi.TransactionActionKind;

/**
 * The transaction engine (QEMU 7.2 qmp_transaction, reference/transactions.md §4/§7) with
 * scripted actions: prepare in list order, the first failure rolls the prepared ones back in
 * reverse and is the error, later actions are never looked at; commit, abort and clean cannot
 * fail the transaction; everything runs inside one drained section over the named nodes.
 */
@Timeout(value = 30, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class TransactionsTest {
    private final NodeGraph graph = new NodeGraph(DriverRegistry.standard());
    private final Devices devices = new Devices(graph);
    private final Transactions engine = new Transactions(devices);
    private final List<String> log = new ArrayList<>();

    @TempDir
    Path dir;

    @AfterEach
    void tearDown() {
        graph.closeAll();
    }

    /** An action that logs each step; prepare may fail, the other steps may throw (bugs). */
    private final class Scripted implements TransactionAction {
        final String name;
        QmpError prepareError;
        RuntimeException stepError;
        boolean grouped = true;
        List<BlockNode> nodes = List.of();
        Runnable duringPrepare = () -> { };
        Runnable duringClean = () -> { };

        Scripted(String name) {
            this.name = name;
        }

        @Override
        public TransactionActionKind kind() {
            return TransactionActionKind.BLOCKDEV_BACKUP;
        }

        @Override
        public boolean allowsGroupedCompletion() {
            return grouped;
        }

        @Override
        public List<BlockNode> nodes() {
            return nodes;
        }

        @Override
        public void prepare() throws QmpError {
            log.add("prepare " + name);
            duringPrepare.run();
            if (prepareError != null) {
                throw prepareError;
            }
        }

        @Override
        public void commit() {
            log.add("commit " + name);
            if (stepError != null) {
                throw stepError;
            }
        }

        @Override
        public void abort() {
            log.add("abort " + name);
            if (stepError != null) {
                throw stepError;
            }
        }

        @Override
        public void clean() {
            log.add("clean " + name);
            duringClean.run();
            if (stepError != null) {
                throw stepError;
            }
        }
    }

    @Test
    void allPrepareThenAllCommitThenAllCleanInListOrder() throws Exception {
        engine.run(List.of(new Scripted("a"), new Scripted("b"), new Scripted("c")), false);
        assertThat(log).containsExactly("prepare a", "prepare b", "prepare c", "commit a", "commit b", "commit c",
                "clean a", "clean b", "clean c");
    }

    @Test
    void theFirstFailingPrepareRollsBackThePreparedInReverseAndIsTheError() {
        Scripted a = new Scripted("a");
        Scripted b = new Scripted("b");
        Scripted c = new Scripted("c");
        Scripted d = new Scripted("d");
        c.prepareError = QmpError.generic("Cannot find device='nosuch' nor node-name='nosuch'");
        d.prepareError = QmpError.generic("never looked at");
        QmpError e = catchThrowableOfType(QmpError.class, () -> engine.run(List.of(a, b, c, d), false));
        assertThat(e).isSameAs(c.prepareError);
        // the failing action undid its own work; the prepared ones are aborted newest first,
        // then every prepared one is cleaned
        assertThat(log).containsExactly("prepare a", "prepare b", "prepare c", "abort b", "abort a", "clean a",
                "clean b");
    }

    @Test
    void aFailingFirstActionLeavesNothingToUndo() {
        Scripted a = new Scripted("a");
        a.prepareError = QmpError.generic("Transaction aborted using Abort action");
        assertThat(catchThrowableOfType(QmpError.class, () -> engine.run(List.of(a, new Scripted("b")), false)))
                .hasMessage("Transaction aborted using Abort action");
        assertThat(log).containsExactly("prepare a");
    }

    @Test
    void aBugInCommitDoesNotFailTheTransactionNorStopTheOthers() throws Exception {
        Scripted a = new Scripted("a");
        a.stepError = new IllegalStateException("a bug in commit and clean");
        Scripted b = new Scripted("b");
        engine.run(List.of(a, b), false);
        assertThat(log).containsExactly("prepare a", "prepare b", "commit a", "commit b", "clean a", "clean b");
    }

    @Test
    void aBugInAbortDoesNotStopTheRollback() {
        Scripted a = new Scripted("a");
        Scripted b = new Scripted("b");
        b.stepError = new IllegalStateException("a bug in abort and clean");
        Scripted c = new Scripted("c");
        c.prepareError = QmpError.generic("no");
        assertThat(catchThrowableOfType(QmpError.class, () -> engine.run(List.of(a, b, c), false)))
                .hasMessage("no");
        assertThat(log).containsExactly("prepare a", "prepare b", "prepare c", "abort b", "abort a", "clean a",
                "clean b");
    }

    @Test
    void aBugInPrepareRollsBackLikeAnError() {
        Scripted a = new Scripted("a");
        Scripted b = new Scripted("b");
        b.duringPrepare = () -> {
            throw new IllegalStateException("a bug in prepare");
        };
        assertThat(catchThrowableOfType(IllegalStateException.class, () -> engine.run(List.of(a, b), false)))
                .hasMessage("a bug in prepare");
        assertThat(log).containsExactly("prepare a", "prepare b", "abort a", "clean a");
    }

    @Test
    void inGroupedModeAnActionThatDoesNotAllowItIsRefusedInItsTurn() {
        Scripted backup = new Scripted("backup");
        Scripted bitmap = new Scripted("bitmap");
        bitmap.grouped = false;
        TransactionAction add = new TransactionAction() {
            @Override
            public TransactionActionKind kind() {
                return TransactionActionKind.BLOCK_DIRTY_BITMAP_ADD;
            }

            @Override
            public void prepare() {
                log.add("prepare add");
            }
        };
        assertThat(catchThrowableOfType(QmpError.class, () -> engine.run(List.of(backup, add, bitmap), true)))
                .hasMessage("Action 'block-dirty-bitmap-add' does not support Transaction property "
                        + "completion-mode = grouped");
        assertThat(log).containsExactly("prepare backup", "abort backup", "clean backup");
        log.clear();
        // the same list is fine when the jobs end individually
        assertThatNoError(() -> engine.run(List.of(backup, add, bitmap), false));
        assertThat(log).contains("prepare add", "prepare bitmap");
    }

    private static void assertThatNoError(org.assertj.core.api.ThrowableAssert.ThrowingCallable c) {
        assertThat(org.assertj.core.api.Assertions.catchThrowable(c)).isNull();
    }

    @Test
    void guestRequestsOnTheNamedNodesWaitFromBeforeTheFirstPrepareUntilAfterTheLastClean() throws Exception {
        Files.write(dir.resolve("a.img"), new byte[1 << 20]);
        BlockNode file = graph.add(new BlockdevOptions.File(BlockdevOptions.Common.defaults().withNodeName("f0"),
                dir.resolve("a.img").toString()));
        BlockNode counted = GatedDriver.over(file, "counted");
        graph.register(counted);
        GatedDriver gate = GatedDriver.of(counted);
        Device device = new Device("drive0", counted, BlockdevOnError.REPORT, BlockdevOnError.REPORT);
        devices.add(device);
        RecordingEvents events = new RecordingEvents();
        GuestIo io = new GuestIo(device, new RunState(events, () -> { }), events);

        AtomicReference<Thread> guest = new AtomicReference<>();
        AtomicReference<Throwable> guestFailure = new AtomicReference<>();
        Scripted first = new Scripted("first");
        first.nodes = List.of(counted);
        first.duringPrepare = () -> {
            // a guest read issued during the transaction waits at the device's drain
            Thread t = Thread.ofPlatform().daemon().start(() -> {
                try {
                    io.read(0, ByteBuffer.allocate(4096));
                } catch (Throwable e) {
                    guestFailure.set(e);
                }
            });
            guest.set(t);
            while (t.getState() != Thread.State.WAITING) {
                Thread.onSpinWait();
            }
        };
        Scripted last = new Scripted("last");
        List<Integer> readsSeenInClean = new ArrayList<>();
        last.duringClean = () -> readsSeenInClean.add(gate.reads.get());
        engine.run(List.of(first, new Scripted("middle"), last), false);
        guest.get().join(10_000);
        assertThat(guestFailure.get()).isNull();
        assertThat(readsSeenInClean).as("reads that reached the node before the last clean").containsExactly(0);
        assertThat(gate.reads.get()).as("the held read went on after the transaction").isEqualTo(1);
    }

    @Test
    void anEmptyTransactionDoesNothing() throws Exception {
        engine.run(List.of(), true);
        assertThat(log).isEmpty();
    }
}
