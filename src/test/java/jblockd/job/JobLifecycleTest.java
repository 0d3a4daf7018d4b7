package jblockd.job;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.Access;
import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.DriverRegistry;
import jblockd.block.Errno;
import jblockd.block.ImageCreator;
import jblockd.block.IoError;
import jblockd.block.NodeGraph;
import jblockd.block.NodeUser;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.ErrorAction;
import jblockd.qapi.IoOperation;
import jblockd.qapi.IoStatus;
import jblockd.qapi.JobStatus;
import jblockd.qapi.JobType;
import jblockd.qapi.QapiEvents;
import jblockd.qapi.QmpError;

/**
 * The job framework with a synthetic driver that "copies" {@code chunks} chunks, failing the
 * chunks listed in {@code failures} (each entry fails once, or always when persistent).
 */
class JobLifecycleTest {
    private final RecordingEvents events = new RecordingEvents();
    private final NodeGraph graph = new NodeGraph(DriverRegistry.standard());
    private final JobRegistry registry = new JobRegistry(events, graph);

    @TempDir
    Path dir;

    @AfterEach
    void tearDown() {
        registry.cancelAll(5, TimeUnit.SECONDS);
    }

    /** A copy loop: per chunk, rate limit, "I/O" (maybe failing), progress. */
    static final class LoopDriver implements JobDriver {
        final int chunks;
        final long chunkSize;
        final BlockdevOnError policy;
        final Set<Integer> failOnce = ConcurrentHashMap.newKeySet();
        final Set<Integer> failAlways = ConcurrentHashMap.newKeySet();
        Errno errno = Errno.EIO;
        final AtomicInteger attempts = new AtomicInteger();
        final List<String> hooks = new ArrayList<>();
        volatile boolean readyAfterLoop;
        final AtomicBoolean completeRequested = new AtomicBoolean();

        LoopDriver(int chunks, long chunkSize, BlockdevOnError policy) {
            this.chunks = chunks;
            this.chunkSize = chunkSize;
            this.policy = policy;
        }

        @Override
        public JobType type() {
            return readyAfterLoop ? JobType.MIRROR : JobType.BACKUP;
        }

        @Override
        public void run(JobContext ctx) throws Exception {
            ctx.setLen(chunks * chunkSize);
            for (int i = 0; i < chunks; i++) {
                while (true) {
                    ctx.rateLimit(chunkSize);
                    attempts.incrementAndGet();
                    boolean fail = failAlways.contains(i) || failOnce.remove(i);
                    if (!fail) {
                        ctx.addOffset(chunkSize);
                        break;
                    }
                    IoError e = IoError.of(errno);
                    if (ctx.handleError(policy, IoOperation.READ, e, i * chunkSize) == ErrorAction.IGNORE) {
                        ctx.recordIgnoredError(e);
                        break;
                    }
                }
            }
            if (readyAfterLoop) {
                ctx.ready();
                while (!completeRequested.get() && !ctx.cancelRequested()) {
                    ctx.sleep(TimeUnit.MILLISECONDS.toNanos(5));
                }
            }
        }

        @Override
        public boolean canComplete() {
            return readyAfterLoop;
        }

        @Override
        public void complete() {
            completeRequested.set(true);
        }

        @Override
        public boolean cancel(boolean force, boolean ready) {
            return force || !ready;
        }

        /** Runs inside prepare (a test holds it there); throws to make prepare fail. */
        volatile ThrowingRunnable duringPrepare = () -> { };

        @Override
        public void prepare() throws Exception {
            duringPrepare.run();
            synchronized (this) {
                hooks.add("prepare");
            }
        }

        @Override
        public synchronized void commit() {
            hooks.add("commit");
        }

        @Override
        public synchronized void abort() {
            hooks.add("abort");
        }

        @Override
        public synchronized void clean() {
            hooks.add("clean");
        }
    }

    @FunctionalInterface
    interface ThrowingRunnable {
        void run() throws Exception;
    }

    private Job start(String id, LoopDriver d, long speed, boolean autoFinalize, boolean autoDismiss)
            throws QmpError {
        Job job = registry.create(id, d, List.of(), speed, autoFinalize, autoDismiss);
        registry.start(job);
        return job;
    }

    @Test
    void successfulJobEmitsQemusSequenceAndDisappears() throws Exception {
        LoopDriver d = new LoopDriver(8, 4096, BlockdevOnError.REPORT);
        Job job = start("j0", d, 0, true, true);
        assertThat(job.awaitEnd(10, TimeUnit.SECONDS)).isTrue();
        events.await("J(null)");
        assertThat(events.events()).containsExactly("J(created)", "J(running)", "J(waiting)", "J(pending)",
                "COMPLETED", "J(concluded)", "J(null)");
        assertThat(d.hooks).containsExactly("prepare", "commit", "clean");
        assertThat(registry.find("j0")).isEmpty();
    }

    @Test
    void reportFailsTheJobWithStrerrorAfterTheErrorEvent() throws Exception {
        LoopDriver d = new LoopDriver(8, 4096, BlockdevOnError.REPORT);
        d.failAlways.add(3);
        Job job = start("j0", d, 0, true, false);
        assertThat(job.awaitEnd(10, TimeUnit.SECONDS)).isTrue();
        assertThat(events.events()).containsExactly("J(created)", "J(running)", "ERROR(read,report)",
                "J(aborting)", "COMPLETED(Input/output error)", "J(concluded)");
        JobInfo info = job.info();
        assertThat(info.status()).isEqualTo(JobStatus.CONCLUDED);
        assertThat(info.error()).isEqualTo("Input/output error");
        assertThat(info.offset()).isEqualTo(3 * 4096);
        assertThat(d.hooks).containsExactly("abort", "clean");
        job.dismiss();
        assertThat(events.events()).endsWith("J(null)");
        assertThat(registry.find("j0")).isEmpty();
    }

    @Test
    void stopPausesWithIoStatusAndResumeClearsItAndRetries() throws Exception {
        LoopDriver d = new LoopDriver(8, 4096, BlockdevOnError.STOP);
        d.failOnce.add(2);
        Job job = start("j0", d, 0, true, true);
        events.await("J(paused)");
        JobInfo info = job.info();
        assertThat(info.ioStatus()).isEqualTo(IoStatus.FAILED);
        assertThat(info.paused()).isTrue();
        assertThat(info.offset()).isEqualTo(2 * 4096);
        assertThatThrownBy(job::userPause).hasMessage("Job is already paused");
        job.userResume();
        assertThat(job.info().ioStatus()).isEqualTo(IoStatus.OK);
        assertThat(job.awaitEnd(10, TimeUnit.SECONDS)).isTrue();
        events.await("J(null)");
        assertThat(events.events()).containsExactly("J(created)", "J(running)", "ERROR(read,stop)", "J(paused)",
                "J(running)", "J(waiting)", "J(pending)", "COMPLETED", "J(concluded)", "J(null)");
        assertThat(d.attempts.get()).isEqualTo(9); // the failed chunk was retried once
    }

    @Test
    void enospcPolicyStopsOnEnospcWithNospaceAndReportsOtherErrors() throws Exception {
        LoopDriver d = new LoopDriver(4, 4096, BlockdevOnError.ENOSPC);
        d.errno = Errno.ENOSPC;
        d.failOnce.add(1);
        Job job = start("j0", d, 0, true, true);
        events.await("J(paused)");
        assertThat(job.info().ioStatus()).isEqualTo(IoStatus.NOSPACE);
        job.userResume();
        assertThat(job.awaitEnd(10, TimeUnit.SECONDS)).isTrue();

        events.clear();
        LoopDriver d2 = new LoopDriver(4, 4096, BlockdevOnError.ENOSPC);
        d2.failOnce.add(1);
        Job job2 = start("j1", d2, 0, true, true);
        assertThat(job2.awaitEnd(10, TimeUnit.SECONDS)).isTrue();
        events.await("J(null)");
        assertThat(events.events()).contains("ERROR(read,report)", "COMPLETED(Input/output error)");
    }

    @Test
    void ignoreCarriesOnAndEndsWithTheErrorPerSpec() throws Exception {
        LoopDriver d = new LoopDriver(8, 4096, BlockdevOnError.IGNORE);
        d.failAlways.add(5);
        Job job = start("j0", d, 0, true, true);
        assertThat(job.awaitEnd(10, TimeUnit.SECONDS)).isTrue();
        events.await("J(null)");
        assertThat(events.events()).containsExactly("J(created)", "J(running)", "ERROR(read,ignore)",
                "J(aborting)", "COMPLETED(Input/output error)", "J(concluded)", "J(null)");
        assertThat(d.attempts.get()).isEqualTo(8);
    }

    @Test
    void persistentIgnoredErrorBacksOffInsteadOfSpinning() throws Exception {
        Job job = registry.create("j0", new LoopDriver(1, 1, BlockdevOnError.IGNORE), List.of(), 0, true, true);
        registry.start(job);
        job.awaitEnd(5, TimeUnit.SECONDS);
        events.clear();
        // A mirror-like retry loop on one failing offset for 300 ms.
        JobDriver spinner = new JobDriver() {
            public JobType type() {
                return JobType.MIRROR;
            }

            public void run(JobContext ctx) throws Exception {
                long end = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(300);
                while (System.nanoTime() < end) {
                    ctx.handleError(BlockdevOnError.IGNORE, IoOperation.WRITE, IoError.of(Errno.EIO), 0);
                }
            }
        };
        Job j = registry.create("j1", spinner, List.of(), 0, true, true);
        registry.start(j);
        assertThat(j.awaitEnd(10, TimeUnit.SECONDS)).isTrue();
        long errors = events.events().stream().filter(e -> e.startsWith("ERROR")).count();
        // back-off 10, 20, 40, 80, 160 ms: a handful of events, never thousands
        assertThat(errors).isBetween(3L, 10L);
    }

    @Test
    void userPauseAndResumeEmitPausedAndRunningBeforeReturning() throws Exception {
        LoopDriver d = new LoopDriver(1000, 1 << 20, BlockdevOnError.REPORT);
        Job job = start("j0", d, 10L << 20, true, true);
        job.userPause();
        assertThat(job.awaitPaused(5, TimeUnit.SECONDS)).isTrue();
        assertThat(events.events()).endsWith("J(paused)");
        assertThat(job.info().paused()).isTrue();
        assertThat(job.info().busy()).isFalse();
        long off = job.info().offset();
        Thread.sleep(150);
        assertThat(job.info().offset()).isEqualTo(off);
        job.userResume();
        assertThat(events.events()).endsWith("J(running)");
        assertThatThrownBy(job::userResume).hasMessage("Can't resume a job that was not paused");
        job.userCancel(true);
        assertThat(events.events()).endsWith("J(aborting)", "CANCELLED", "J(concluded)", "J(null)");
    }

    @Test
    void cancelWhileRunningEndsCancelledWithOffsetBelowLen() throws Exception {
        LoopDriver d = new LoopDriver(1000, 1 << 20, BlockdevOnError.REPORT);
        Job job = start("j0", d, 20L << 20, true, false);
        Thread.sleep(100);
        job.userCancel(false);
        assertThat(events.events()).containsExactly("J(created)", "J(running)", "J(aborting)", "CANCELLED",
                "J(concluded)");
        JobInfo info = job.info();
        assertThat(info.offset()).isLessThan(info.len());
        assertThat(info.error()).isEqualTo("Operation canceled");
        assertThatThrownBy(() -> job.userCancel(false))
                .hasMessage("Job 'j0' in state 'concluded' cannot accept command verb 'cancel'");
        assertThat(d.hooks).containsExactly("abort", "clean");
    }

    @Test
    void manualFinalizeAndDismiss() throws Exception {
        LoopDriver d = new LoopDriver(4, 4096, BlockdevOnError.REPORT);
        Job job = start("j0", d, 0, false, false);
        events.await("PENDING");
        assertThat(job.status()).isEqualTo(JobStatus.PENDING);
        assertThatThrownBy(job::dismiss).hasMessage("Job 'j0' in state 'pending' cannot accept command verb 'dismiss'");
        job.finalizeJob();
        assertThat(events.events()).containsExactly("J(created)", "J(running)", "J(waiting)", "J(pending)",
                "PENDING", "COMPLETED", "J(concluded)");
        job.dismiss();
        assertThat(events.events()).endsWith("J(null)");
    }

    @Test
    void cancelInPendingAbortsAndEmitsCancelled() throws Exception {
        LoopDriver d = new LoopDriver(4, 4096, BlockdevOnError.REPORT);
        Job job = start("j0", d, 0, false, true);
        events.await("PENDING");
        job.userCancel(false);
        assertThat(events.events()).endsWith("PENDING", "J(aborting)", "CANCELLED", "J(concluded)", "J(null)");
        assertThat(d.hooks).containsExactly("abort", "clean");
    }

    @Test
    void softCancelAfterReadyCompletesInsteadOfCancelling() throws Exception {
        LoopDriver d = new LoopDriver(4, 4096, BlockdevOnError.REPORT);
        d.readyAfterLoop = true;
        Job job = start("m0", d, 0, true, true);
        events.await("READY");
        assertThat(job.info().ready()).isTrue();
        job.userPause();
        assertThat(job.awaitPaused(5, TimeUnit.SECONDS)).isTrue();
        assertThat(events.events()).endsWith("J(standby)");
        job.userResume();
        assertThat(events.events()).endsWith("J(ready)");
        job.userCancel(false);
        assertThat(job.awaitEnd(10, TimeUnit.SECONDS)).isTrue();
        events.await("J(null)");
        assertThat(events.events()).containsExactly("J(created)", "J(running)", "J(ready)", "READY",
                "J(standby)", "J(ready)", "J(waiting)", "J(pending)", "COMPLETED", "J(concluded)", "J(null)");
        assertThatThrownBy(job::complete).isInstanceOf(QmpError.class);
    }

    @Test
    void completeIsRefusedBeforeReadyAndForTypesWithoutIt() throws Exception {
        LoopDriver d = new LoopDriver(1000, 1 << 20, BlockdevOnError.REPORT);
        Job job = start("j0", d, 1 << 20, true, true);
        assertThatThrownBy(job::complete)
                .hasMessage("Job 'j0' in state 'running' cannot accept command verb 'complete'");
        job.userCancel(true);
    }

    @Test
    void negativeSpeedCreatesAndDropsTheJob() {
        LoopDriver d = new LoopDriver(1, 1, BlockdevOnError.REPORT);
        assertThatThrownBy(() -> registry.create("j0", d, List.of(), -1, true, true))
                .hasMessage("Parameter 'speed' expects a non-negative value");
        assertThat(events.events()).containsExactly("J(created)", "J(null)");
        assertThat(registry.find("j0")).isEmpty();
    }

    @Test
    void jobIdRulesAndOneJobPerNode() throws Exception {
        Path img = dir.resolve("a.raw");
        graph.drivers().creator("raw").orElseThrow().create(ImageCreator.Options.of(img, 65536));
        BlockNode node = graph.add(new BlockdevOptions.File(BlockdevOptions.Common.defaults().withNodeName("f0"),
                img.toString()));
        LoopDriver d = new LoopDriver(1000, 1 << 20, BlockdevOnError.REPORT);
        assertThatThrownBy(() -> registry.create("bad id", d, List.of(), 0, true, true))
                .hasMessage("Invalid job ID 'bad id'");
        assertThatThrownBy(() -> registry.create("1abc", d, List.of(), 0, true, true))
                .hasMessage("Invalid job ID '1abc'");
        assertThatThrownBy(() -> registry.create("", d, List.of(), 0, true, true))
                .hasMessage("Invalid job ID ''");
        Job job = registry.create("j0", d, List.of(JobUse.node(node, "main node", Access.PASSIVE)), 1 << 20, true,
                true);
        registry.start(job);
        assertThatThrownBy(() -> registry.create("j0", d, List.of(), 0, true, true))
                .hasMessage("Job ID 'j0' already in use");
        events.clear();
        assertThatThrownBy(() -> registry.checkNotBusy(node, "drive0"))
                .hasMessage("Node 'drive0' is busy: block device is in use by block job: backup");
        assertThat(events.events()).containsExactly("J(paused)", "J(running)", "J(paused)", "J(running)");
        assertThat(graph.usersOf(node)).extracting(NodeUser::blocker)
                .containsExactly("block device is in use by block job: backup");
        job.userCancel(true);
        assertThat(graph.usersOf(node)).isEmpty();
        assertThat(registry.jobUsing(node)).isEmpty();
    }

    /**
     * QEMU emits BLOCK_JOB_COMPLETED and dismisses an auto-dismiss job in one main-loop step: a
     * client reacting to the event may blockdev-del the job's nodes at once. So by the time the
     * end event goes out the job holds no node; it stays listed until after the event.
     */
    @Test
    void anAutoDismissJobHasLetGoOfItsNodesWhenItsEndEventGoesOut() throws Exception {
        Path img = dir.resolve("a.raw");
        graph.drivers().creator("raw").orElseThrow().create(ImageCreator.Options.of(img, 65536));
        BlockNode node = graph.add(new BlockdevOptions.File(BlockdevOptions.Common.defaults().withNodeName("f0"),
                img.toString()));
        List<String> seenAtEnd = new java.util.concurrent.CopyOnWriteArrayList<>();
        JobRegistry[] reg = new JobRegistry[1];
        QapiEvents probe = new QapiEvents() {
            public void jobStatusChange(String id, JobStatus status) { }
            public void blockJobCompleted(JobType t, String d, long l, long o, long s, String e) {
                seenAtEnd.add("users=" + graph.usersOf(node).size() + " listed=" + reg[0].find(d).isPresent());
            }
            public void blockJobCancelled(JobType t, String d, long l, long o, long s) {
                blockJobCompleted(t, d, l, o, s, null);
            }
            public void blockJobError(String d, IoOperation op, ErrorAction a) { }
            public void blockJobReady(JobType t, String d, long l, long o, long s) { }
            public void blockJobPending(JobType t, String id) { }
            public void blockIoError(String d, String n, IoOperation op, ErrorAction a, Boolean ns, String r) { }
            public void stop() { }
            public void resume() { }
            public void shutdown(boolean guest, String reason) { }
            public void blockExportDeleted(String id) { }
            public void blockWriteThreshold(String n, long a, long t) { }
        };
        reg[0] = new JobRegistry(probe, graph);
        // rate-limited until start() has returned (a job that ends inside start() is not listed
        // yet: query-block-jobs shows no job still being set up), then let go
        Job done = reg[0].create("j0", new LoopDriver(2000, 4096, BlockdevOnError.REPORT),
                List.of(JobUse.node(node, "main node", Access.PASSIVE)), 4096, true, true);
        reg[0].start(done);
        done.setSpeed(0);
        assertThat(done.awaitEnd(10, TimeUnit.SECONDS)).isTrue();
        Job cancelled = reg[0].create("j1", new LoopDriver(1_000_000, 4096, BlockdevOnError.REPORT),
                List.of(JobUse.node(node, "main node", Access.PASSIVE)), 4096, true, true);
        reg[0].start(cancelled);
        cancelled.userCancel(true);
        assertThat(seenAtEnd).containsExactly("users=0 listed=true", "users=0 listed=true");
    }

    @Test
    void setSpeedIsLiveAndValidated() throws Exception {
        LoopDriver d = new LoopDriver(10_000, 64 * 1024, BlockdevOnError.REPORT);
        Job job = start("j0", d, 1 << 20, true, true);
        Thread.sleep(300);
        long slow = job.info().offset();
        assertThat(slow).isLessThan(1 << 20);
        assertThatThrownBy(() -> job.setSpeed(-5)).hasMessage("Parameter 'speed' expects a non-negative value");
        job.setSpeed(64L << 20);
        Thread.sleep(300);
        assertThat(job.info().offset() - slow).isGreaterThan(4L << 20);
        assertThat(job.info().speed()).isEqualTo(64L << 20);
        job.userCancel(true);
    }

    @Test
    void rateLimitHoldsWithinFivePercentOnAverage() throws Exception {
        long speed = 8L << 20;
        LoopDriver d = new LoopDriver(100_000, 256 * 1024, BlockdevOnError.REPORT);
        Job job = start("j0", d, speed, true, true);
        Thread.sleep(200);
        long t0 = System.nanoTime();
        long o0 = job.info().offset();
        Thread.sleep(1500);
        long o1 = job.info().offset();
        double rate = (o1 - o0) / ((System.nanoTime() - t0) / 1e9);
        job.userCancel(true);
        // loose bound for a shared 2-core machine (chunk granularity adds up to one chunk)
        assertThat(rate).isBetween(speed * 0.85, speed * 1.15);
    }

    @Test
    void cancelAllAtShutdownEndsEveryJobAndDismissesConcluded() throws Exception {
        LoopDriver a = new LoopDriver(1000, 1 << 20, BlockdevOnError.REPORT);
        LoopDriver b = new LoopDriver(1, 4096, BlockdevOnError.REPORT);
        start("a", a, 1 << 20, true, true);
        Job jb = start("b", b, 0, true, false);
        jb.awaitEnd(5, TimeUnit.SECONDS);
        registry.cancelAll(5, TimeUnit.SECONDS);
        assertThat(registry.all()).isEmpty();
        assertThat(events.events()).contains("CANCELLED").endsWith("J(null)");
    }

    @Test
    void aJobIsInvisibleUntilItsCommandStartsIt() throws Exception {
        LoopDriver d = new LoopDriver(1000, 1 << 20, BlockdevOnError.REPORT);
        Job job = registry.create("j0", d, List.of(), 1 << 20, true, true);
        // the command is still putting the job's filters in place: nobody may see or cancel it yet
        assertThat(registry.find("j0")).isEmpty();
        assertThat(registry.query()).isEmpty();
        assertThat(registry.all()).isEmpty();
        assertThatThrownBy(() -> registry.create("j0", d, List.of(), 0, true, true))
                .hasMessage("Job ID 'j0' already in use");
        registry.start(job);
        assertThat(registry.find("j0")).containsSame(job);
        assertThat(registry.query()).extracting(JobInfo::id).containsExactly("j0");
        job.userCancel(true);
    }

    @Test
    void aCancelArrivingWhilePrepareRunsDoesNotTurnTheSuccessIntoCancelled() throws Exception {
        LoopDriver d = new LoopDriver(4, 4096, BlockdevOnError.REPORT);
        java.util.concurrent.CountDownLatch inPrepare = new java.util.concurrent.CountDownLatch(1);
        java.util.concurrent.CountDownLatch cancelDone = new java.util.concurrent.CountDownLatch(1);
        d.duringPrepare = () -> {
            inPrepare.countDown();
            // the point of no return is passed here (a mirror pivots in prepare)
            assertThat(cancelDone.await(10, TimeUnit.SECONDS)).isTrue();
        };
        Job job = start("j0", d, 0, true, true);
        assertThat(inPrepare.await(10, TimeUnit.SECONDS)).isTrue();
        Thread canceller = Thread.ofVirtual().start(() -> {
            try {
                job.userCancel(true); // pending accepts cancel
            } catch (QmpError e) {
                throw new RuntimeException(e);
            } finally {
                cancelDone.countDown();
            }
        });
        assertThat(job.awaitEnd(20, TimeUnit.SECONDS)).isTrue();
        canceller.join(10_000);
        events.await("J(null)");
        assertThat(events.events()).containsExactly("J(created)", "J(running)", "J(waiting)", "J(pending)",
                "COMPLETED", "J(concluded)", "J(null)");
        assertThat(d.hooks).containsExactly("prepare", "commit", "clean");
    }

    @Test
    void aFailingPrepareEndsTheJobWithItsErrorAndAborts() throws Exception {
        LoopDriver d = new LoopDriver(4, 4096, BlockdevOnError.REPORT);
        d.duringPrepare = () -> {
            throw IoError.of(Errno.EIO);
        };
        Job job = start("j0", d, 0, true, true);
        assertThat(job.awaitEnd(10, TimeUnit.SECONDS)).isTrue();
        events.await("J(null)");
        assertThat(events.events()).containsExactly("J(created)", "J(running)", "J(waiting)", "J(pending)",
                "J(aborting)", "COMPLETED(Input/output error)", "J(concluded)", "J(null)");
        assertThat(d.hooks).containsExactly("abort", "clean");
    }
}
