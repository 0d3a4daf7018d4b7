package jblockd.job;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.DriverRegistry;
import jblockd.block.Errno;
import jblockd.block.IoError;
import jblockd.block.NodeGraph;
import jblockd.block.bitmap.DirtyBitmap;
import jblockd.block.cbw.BlockCopy;
import jblockd.device.Devices;
import jblockd.job.backup.BackupGraph;
import jblockd.job.backup.BackupJob;
import jblockd.job.mirror.JobTopFilter;
import jblockd.job.mirror.MirrorJob;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.JobType;
import jblockd.qapi.MirrorSyncMode;

/**
 * Jobs that finish honestly (issue 11, point 3): what can fail at the end (backup's target
 * flush, mirror's pivot) happens in prepare and fails the job with its error; once prepare
 * succeeded a cancel no longer makes the job cancelled.
 */
@Timeout(value = 60, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class JobFinishTest {
    private static final int SIZE = 2 << 20;

    @TempDir
    Path dir;

    private final RecordingEvents events = new RecordingEvents();
    private final NodeGraph graph = new NodeGraph(DriverRegistry.standard());
    private final Devices devices = new Devices(graph);
    private final JobRegistry registry = new JobRegistry(events, graph);
    private byte[] data;

    @AfterEach
    void tearDown() throws Exception {
        registry.cancelAll(5, TimeUnit.SECONDS);
        graph.closeAll();
    }

    private BlockNode file(String name, byte[] content) throws Exception {
        Path p = dir.resolve(name);
        Files.write(p, content);
        return graph.add(new BlockdevOptions.File(BlockdevOptions.Common.defaults().withNodeName(name), p.toString()));
    }

    private BlockNode source() throws Exception {
        data = new byte[SIZE];
        new Random(5).nextBytes(data);
        return file("src", data);
    }

    /** Records what the mirror asks of the graph; {@code pivot} runs {@code onPivot} first. */
    private static final class RecordingActions implements MirrorJob.GraphActions {
        final List<String> calls = new ArrayList<>();
        volatile JobLifecycleTest.ThrowingRunnable onPivot = () -> { };

        /** No device is above these nodes: the section holds nobody. */
        @Override
        public jblockd.device.DrainedSection drain() {
            return new jblockd.device.Devices(null).drain();
        }

        @Override
        public void pivot() throws Exception {
            onPivot.run();
            synchronized (this) {
                calls.add("pivot");
            }
        }

        @Override
        public synchronized void detach() {
            calls.add("detach");
        }

        @Override
        public synchronized void release(boolean pivoted) {
            calls.add("release(" + pivoted + ")");
        }
    }

    private MirrorJob mirror(BlockNode src, BlockNode tgt, RecordingActions actions) {
        DirtyBitmap bitmap = new DirtyBitmap(SIZE, 64 * 1024);
        src.bitmaps().adopt(bitmap); // as MirrorCommands: the source records guest writes
        return new MirrorJob(new MirrorJob.Params(JobType.MIRROR, MirrorSyncMode.FULL, null,
                MirrorJob.DEFAULT_BUF_SIZE, BlockdevOnError.REPORT, BlockdevOnError.REPORT, true, false),
                src, tgt, new JobTopFilter("mirror_top", src, null), bitmap, actions);
    }

    @Test
    void aFailedPivotEndsTheMirrorWithItsErrorAndLeavesTheSourceInPlace() throws Exception {
        RecordingActions actions = new RecordingActions();
        actions.onPivot = () -> {
            throw IoError.of(Errno.EPERM);
        };
        MirrorJob driver = mirror(source(), file("tgt", new byte[SIZE]), actions);
        Job job = registry.create("m0", driver, List.of(), 0, true, true);
        registry.start(job);
        events.await("READY");
        job.complete();
        assertThat(job.awaitEnd(20, TimeUnit.SECONDS)).isTrue();
        events.await("J(null)");
        assertThat(events.events()).containsSubsequence("READY", "J(waiting)", "J(pending)", "J(aborting)",
                "COMPLETED(Operation not permitted)", "J(concluded)", "J(null)");
        assertThat(driver.pivoted()).isFalse();
        // detach is idempotent: abort and clean may both ask for it
        assertThat(actions.calls).containsOnly("detach", "release(false)").endsWith("release(false)");
    }

    @Test
    void aCancelArrivingDuringThePivotLeavesACompletedPivotedMirror() throws Exception {
        RecordingActions actions = new RecordingActions();
        CountDownLatch pivoting = new CountDownLatch(1);
        CountDownLatch cancelled = new CountDownLatch(1);
        actions.onPivot = () -> {
            pivoting.countDown();
            assertThat(cancelled.await(10, TimeUnit.SECONDS)).isTrue();
        };
        MirrorJob driver = mirror(source(), file("tgt", new byte[SIZE]), actions);
        Job job = registry.create("m0", driver, List.of(), 0, true, true);
        registry.start(job);
        events.await("READY");
        job.complete();
        assertThat(pivoting.await(10, TimeUnit.SECONDS)).isTrue();
        Thread canceller = Thread.ofVirtual().start(() -> {
            try {
                job.userCancel(true);
            } catch (Exception e) {
                // a refusal is fine too; only the outcome matters
            } finally {
                cancelled.countDown();
            }
        });
        assertThat(job.awaitEnd(20, TimeUnit.SECONDS)).isTrue();
        canceller.join(10_000);
        events.await("J(null)");
        assertThat(events.events()).doesNotContain("CANCELLED", "J(aborting)")
                .containsSubsequence("J(pending)", "COMPLETED", "J(concluded)", "J(null)");
        assertThat(driver.pivoted()).isTrue();
        assertThat(actions.calls).containsExactly("pivot", "release(true)");
        assertThat(Files.readAllBytes(dir.resolve("tgt"))).isEqualTo(data);
    }

    @Test
    void aBackupWhoseTargetCannotFlushEndsWithTheFlushError() throws Exception {
        BlockNode src = source();
        BlockNode tgt = GatedDriver.over(file("tgt", new byte[SIZE]), "gtgt");
        GatedDriver.of(tgt).flushError = IoError.of(Errno.ENOSPC);
        BlockCopy copy = new BlockCopy(src, tgt, SIZE, 64 * 1024, BlockCopy.MAX_CHUNK, 4, false);
        BackupGraph bg = BackupGraph.prepare(graph, devices, src, copy, null, tgt, false);
        BackupJob driver = new BackupJob(copy, src, MirrorSyncMode.FULL, BlockdevOnError.REPORT,
                BlockdevOnError.REPORT, 4, bg);
        Job job = registry.create("b0", driver, List.of(), 0, true, true);
        job.context().setLen(SIZE);
        copy.onProgress(job.context()::addOffset);
        registry.start(job);
        assertThat(job.awaitEnd(20, TimeUnit.SECONDS)).isTrue();
        events.await("J(null)");
        assertThat(events.events()).containsSubsequence("J(pending)", "J(aborting)",
                "COMPLETED(No space left on device)", "J(concluded)", "J(null)");
        assertThat(graph.node(bg.filter().nodeName())).as("the filter is gone either way").isEmpty();
    }
}
