package jblockd.job;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import jblockd.block.DriverRegistry;
import jblockd.block.Errno;
import jblockd.block.IoError;
import jblockd.block.NodeGraph;
import jblockd.qapi.ErrorAction;
import jblockd.qapi.IoOperation;
import jblockd.qapi.JobStatus;
import jblockd.qapi.JobType;
import jblockd.qapi.QapiEvents;

/**
 * Job transactions (QEMU job.c JobTxn, reference/transactions.md §6.2): the jobs of a grouped
 * transaction end together. Every expected sequence below is QEMU 7.2's, observed with two
 * backups jA (created first) and jB: members are kept newest first, so jB moves to pending and
 * ends before jA; an abort cancels the others one by one in that order.
 */
@Timeout(value = 60, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class JobTxnTest {
    private final Tagged events = new Tagged();
    private final JobRegistry registry = new JobRegistry(events, new NodeGraph(DriverRegistry.standard()));
    /** The drivers' hooks, in the order they ran: "prepare jA", "commit jB", ... */
    private final List<String> hooks = new ArrayList<>();

    @AfterEach
    void tearDown() {
        registry.cancelAll(5, TimeUnit.SECONDS);
    }

    /** Events with the job id: {@code J(running jA)}, {@code COMPLETED(jB,Input/output error)}. */
    static final class Tagged implements QapiEvents {
        private final List<String> list = new ArrayList<>();

        private synchronized void add(String s) {
            list.add(s);
            notifyAll();
        }

        synchronized List<String> all() {
            return List.copyOf(list);
        }

        synchronized List<String> since(int from) {
            return List.copyOf(list.subList(from, list.size()));
        }

        synchronized int size() {
            return list.size();
        }

        synchronized void await(String exact) throws InterruptedException {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (!list.contains(exact)) {
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    throw new AssertionError(exact + " not seen; got " + list);
                }
                TimeUnit.NANOSECONDS.timedWait(this, left);
            }
        }

        @Override
        public void jobStatusChange(String id, JobStatus status) {
            add("J(" + status.wire() + " " + id + ")");
        }

        @Override
        public void blockJobCompleted(JobType type, String device, long len, long offset, long speed, String error) {
            add(error == null ? "COMPLETED(" + device + ")" : "COMPLETED(" + device + "," + error + ")");
        }

        @Override
        public void blockJobCancelled(JobType type, String device, long len, long offset, long speed) {
            add("CANCELLED(" + device + ")");
        }

        @Override
        public void blockJobError(String device, IoOperation operation, ErrorAction action) {
            add("ERROR(" + device + ")");
        }

        @Override
        public void blockJobReady(JobType type, String device, long len, long offset, long speed) {
            add("READY(" + device + ")");
        }

        @Override
        public void blockJobPending(JobType type, String id) {
            add("PENDING(" + id + ")");
        }

        @Override
        public void blockIoError(String device, String nodeName, IoOperation operation, ErrorAction action,
                                 Boolean nospace, String reason) {
            add("IO_ERROR");
        }

        @Override
        public void stop() {
        }

        @Override
        public void resume() {
        }

        @Override
        public void shutdown(boolean guest, String reason) {
        }

        @Override
        public void blockExportDeleted(String id) {
        }

        @Override
        public void blockWriteThreshold(String nodeName, long amountExceeded, long writeThreshold) {
        }
    }

    /**
     * A job that works until told to finish ({@link #succeed}) or fail ({@link #fail}); a pause
     * or cancel reaches it at its pause point, as any job's.
     */
    final class StepDriver implements JobDriver {
        final String id;
        final AtomicBoolean done = new AtomicBoolean();
        volatile boolean failRun;
        volatile boolean failPrepare;

        StepDriver(String id) {
            this.id = id;
        }

        void succeed() {
            done.set(true);
        }

        void fail() {
            failRun = true;
            done.set(true);
        }

        @Override
        public JobType type() {
            return JobType.BACKUP;
        }

        @Override
        public void run(JobContext ctx) throws Exception {
            ctx.setLen(1);
            while (!done.get()) {
                ctx.sleep(TimeUnit.MILLISECONDS.toNanos(2));
            }
            if (failRun) {
                throw IoError.of(Errno.EIO);
            }
            ctx.addOffset(1);
        }

        private void hook(String what) {
            synchronized (hooks) {
                hooks.add(what + " " + id);
            }
        }

        @Override
        public void prepare() throws Exception {
            hook("prepare");
            if (failPrepare) {
                throw IoError.of(Errno.EIO);
            }
        }

        @Override
        public void commit() {
            hook("commit");
        }

        @Override
        public void abort() {
            hook("abort");
        }

        @Override
        public void clean() {
            hook("clean");
        }
    }

    private List<String> hooks() {
        synchronized (hooks) {
            return List.copyOf(hooks);
        }
    }

    private Job member(JobTxn txn, StepDriver d, boolean autoFinalize, boolean autoDismiss) throws Exception {
        return registry.create(d.id, d, List.of(), 0, autoFinalize, autoDismiss, txn);
    }

    /** Two members of one transaction, both started (as a transaction's commit leaves them). */
    private record Pair(JobTxn txn, StepDriver a, StepDriver b, Job ja, Job jb) {
    }

    private Pair startedPair(boolean autoFinalizeA) throws Exception {
        JobTxn txn = new JobTxn();
        StepDriver a = new StepDriver("jA");
        StepDriver b = new StepDriver("jB");
        Job ja = member(txn, a, autoFinalizeA, true);
        Job jb = member(txn, b, true, true);
        registry.start(ja);
        registry.start(jb);
        return new Pair(txn, a, b, ja, jb);
    }

    @Test
    void membersAreKeptNewestFirst() throws Exception {
        Pair p = startedPair(true);
        assertThat(p.txn().members()).containsExactly(p.jb(), p.ja());
        p.a().succeed();
        p.b().succeed();
        events.await("J(null jA)");
    }

    @Test
    void theFirstToFinishWaitsAndAllAreFinalizedTogetherNewestFirst() throws Exception {
        Pair p = startedPair(true);
        p.a().succeed();
        events.await("J(waiting jA)");
        assertThat(p.ja().info().status()).isEqualTo(JobStatus.WAITING);
        assertThat(p.ja().info().offset()).isEqualTo(p.ja().info().len());
        assertThat(p.jb().info().status()).isEqualTo(JobStatus.RUNNING);
        assertThat(hooks()).isEmpty();
        int mark = events.size();
        p.b().succeed();
        events.await("J(null jA)");
        assertThat(events.since(mark)).containsExactly("J(waiting jB)", "J(pending jB)", "J(pending jA)",
                "COMPLETED(jB)", "J(concluded jB)", "J(null jB)", "COMPLETED(jA)", "J(concluded jA)", "J(null jA)");
        // QEMU job_do_finalize(): every prepare first, then each member's commit and clean
        assertThat(hooks()).containsExactly("prepare jB", "prepare jA", "commit jB", "clean jB", "commit jA",
                "clean jA");
    }

    @Test
    void theNewerFailingCancelsTheOlder() throws Exception {
        Pair p = startedPair(true);
        int mark = events.size();
        p.b().fail();
        events.await("J(null jA)");
        assertThat(events.since(mark)).containsExactly("J(aborting jB)", "COMPLETED(jB,Input/output error)",
                "J(concluded jB)", "J(null jB)", "J(aborting jA)", "CANCELLED(jA)", "J(concluded jA)", "J(null jA)");
        assertThat(hooks()).containsExactly("abort jB", "clean jB", "abort jA", "clean jA");
    }

    @Test
    void theOlderFailingCancelsTheNewerWhichEndsFirst() throws Exception {
        Pair p = startedPair(true);
        int mark = events.size();
        p.a().fail();
        events.await("J(null jA)");
        assertThat(events.since(mark)).containsExactly("J(aborting jA)", "J(aborting jB)", "CANCELLED(jB)",
                "J(concluded jB)", "J(null jB)", "COMPLETED(jA,Input/output error)", "J(concluded jA)", "J(null jA)");
    }

    @Test
    void aMemberThatFinishedIsCancelledWhenAnotherFails() throws Exception {
        Pair p = startedPair(true);
        p.a().succeed();
        events.await("J(waiting jA)");
        int mark = events.size();
        p.b().fail();
        events.await("J(null jA)");
        assertThat(events.since(mark)).containsExactly("J(aborting jB)", "COMPLETED(jB,Input/output error)",
                "J(concluded jB)", "J(null jB)", "J(aborting jA)", "CANCELLED(jA)", "J(concluded jA)", "J(null jA)");
        assertThat(hooks()).doesNotContain("commit jA", "prepare jA");
    }

    @Test
    void cancellingOneMemberCancelsAllBeforeTheCancelReturns() throws Exception {
        Pair p = startedPair(true);
        int mark = events.size();
        p.ja().userCancel(false);
        // transactions.md §6.2: block-job-cancel jA's events, all before its reply
        assertThat(events.since(mark)).containsExactly("J(aborting jA)", "J(aborting jB)", "CANCELLED(jB)",
                "J(concluded jB)", "J(null jB)", "CANCELLED(jA)", "J(concluded jA)", "J(null jA)");
    }

    @Test
    void cancellingAWaitingMemberEndsTheOthersFirst() throws Exception {
        Pair p = startedPair(true);
        p.a().succeed();
        events.await("J(waiting jA)");
        int mark = events.size();
        p.ja().userCancel(false);
        // observed on QEMU 7.2: the waiting job is aborted in its turn, after jB
        assertThat(events.since(mark)).containsExactly("J(aborting jB)", "CANCELLED(jB)", "J(concluded jB)",
                "J(null jB)", "J(aborting jA)", "CANCELLED(jA)", "J(concluded jA)", "J(null jA)");
    }

    @Test
    void aUserPausedMemberResumesOnlyWhenItsTurnComes() throws Exception {
        Pair p = startedPair(true);
        p.ja().userPause();
        int mark = events.size();
        p.jb().userCancel(false);
        assertThat(events.since(mark)).containsExactly("J(aborting jB)", "CANCELLED(jB)", "J(concluded jB)",
                "J(null jB)", "J(running jA)", "J(aborting jA)", "CANCELLED(jA)", "J(concluded jA)", "J(null jA)");
    }

    @Test
    void finalizingOnePendingMemberFinalizesAll() throws Exception {
        Pair p = startedPair(false);
        p.a().succeed();
        events.await("J(waiting jA)");
        p.b().succeed();
        events.await("PENDING(jA)");
        assertThat(events.all()).containsSubsequence("J(waiting jB)", "J(pending jB)", "J(pending jA)",
                "PENDING(jA)");
        assertThat(p.jb().info().status()).isEqualTo(JobStatus.PENDING);
        int mark = events.size();
        p.jb().finalizeJob(); // QEMU: the verb is checked on jB only, and every member finalizes
        assertThat(events.since(mark)).containsExactly("COMPLETED(jB)", "J(concluded jB)", "J(null jB)",
                "COMPLETED(jA)", "J(concluded jA)", "J(null jA)");
    }

    @Test
    void cancellingAPendingMemberCancelsAll() throws Exception {
        Pair p = startedPair(false);
        p.a().succeed();
        p.b().succeed();
        events.await("PENDING(jA)");
        int mark = events.size();
        p.jb().userCancel(false);
        assertThat(events.since(mark)).containsExactly("J(aborting jB)", "CANCELLED(jB)", "J(concluded jB)",
                "J(null jB)", "J(aborting jA)", "CANCELLED(jA)", "J(concluded jA)", "J(null jA)");
    }

    @Test
    void aFailingPrepareFailsItsMemberAndCancelsTheRest() throws Exception {
        Pair p = startedPair(true);
        p.a().failPrepare = true;
        p.a().succeed();
        events.await("J(waiting jA)");
        int mark = events.size();
        p.b().succeed();
        events.await("J(null jA)");
        // jB prepared first (newest first), jA's prepare failed: nobody commits
        assertThat(events.since(mark)).containsExactly("J(waiting jB)", "J(pending jB)", "J(pending jA)",
                "J(aborting jA)", "J(aborting jB)", "CANCELLED(jB)", "J(concluded jB)", "J(null jB)",
                "COMPLETED(jA,Input/output error)", "J(concluded jA)", "J(null jA)");
        assertThat(hooks()).containsExactly("prepare jB", "prepare jA", "abort jB", "clean jB", "abort jA",
                "clean jA");
    }

    @Test
    void unstartedMembersRolledBackEndWithoutEndEventsAndAreGoneEvenWithoutAutoDismiss() throws Exception {
        JobTxn txn = new JobTxn();
        StepDriver a = new StepDriver("jA");
        StepDriver b = new StepDriver("jB");
        Job ja = member(txn, a, true, false);
        Job jb = member(txn, b, true, false);
        int mark = events.size();
        // a transaction's rollback aborts its prepared actions in reverse: jB's first
        registry.abortUnstarted(jb);
        assertThat(events.since(mark)).containsExactly("J(aborting jB)", "J(concluded jB)", "J(null jB)",
                "J(aborting jA)", "J(concluded jA)", "J(null jA)");
        registry.abortUnstarted(ja); // already gone: nothing more
        assertThat(events.since(mark)).hasSize(6);
        assertThat(hooks()).containsExactly("abort jB", "clean jB", "abort jA", "clean jA");
        // a job its transaction aborted before it started never runs
        registry.start(ja);
        assertThat(ja.status()).isEqualTo(JobStatus.NULL);
        assertThat(registry.find("jA")).isEmpty();
        assertThat(registry.query()).isEmpty();
    }

    @Test
    void aMemberWhoseCreationFailedLeavesTheTransaction() throws Exception {
        JobTxn txn = new JobTxn();
        StepDriver a = new StepDriver("jA");
        Job ja = member(txn, a, true, true);
        StepDriver b = new StepDriver("jB");
        assertThat(org.assertj.core.api.Assertions.catchThrowable(
                () -> registry.create("jB", b, List.of(), -1, true, true, txn)))
                .hasMessage("Parameter 'speed' expects a non-negative value");
        assertThat(txn.members()).containsExactly(ja);
        registry.start(ja);
        a.succeed();
        events.await("J(null jA)"); // not waiting for a member that never was
        assertThat(events.all()).contains("COMPLETED(jA)");
    }

    @Test
    void aJobMadeAloneIsItsOwnTransaction() throws Exception {
        StepDriver a = new StepDriver("solo");
        Job job = registry.create("solo", a, List.of(), 0, true, true);
        assertThat(job.txn().members()).containsExactly(job);
        registry.start(job);
        a.succeed();
        events.await("J(null solo)");
        assertThat(events.all()).containsExactly("J(created solo)", "J(running solo)", "J(waiting solo)",
                "J(pending solo)", "COMPLETED(solo)", "J(concluded solo)", "J(null solo)");
    }
}
