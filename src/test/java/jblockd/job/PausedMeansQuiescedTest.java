package jblockd.job;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.DriverRegistry;
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
 * "Paused" means quiesced (issue 11, point 3): once a job reports {@code paused: true}, no
 * request of it reaches its source or target until resume. The source is a {@link GatedDriver}
 * whose gate holds the job's chunk reads in flight while the pause is requested.
 */
@Timeout(value = 60, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class PausedMeansQuiescedTest {
    private static final int SIZE = 4 << 20;

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

    private BlockNode gatedSource() throws Exception {
        data = new byte[SIZE];
        new Random(3).nextBytes(data);
        return GatedDriver.over(file("src", data), "gsrc");
    }

    /**
     * With every chunk of the job held in flight at the source, a pause is requested: the job
     * may not claim to be paused while they are held. Once they are let go it pauses, and from
     * then on nothing reaches source or target until resume.
     */
    private void assertPauseWaitsForChunksInFlight(Job job, GatedDriver source, GatedDriver target) throws Exception {
        assertThat(source.awaitHeld()).isTrue();
        job.userPause(); // returns once paused, or after its bounded wait
        boolean pausedWhileHeld = job.info().paused();
        boolean pausedEventWhileHeld = events.events().contains("J(paused)");
        source.letGo();
        assertThat(pausedWhileHeld).as("query-block-jobs said paused with chunks in flight").isFalse();
        assertThat(pausedEventWhileHeld).as("J(paused) with chunks in flight").isFalse();
        assertThat(job.awaitPaused(10, TimeUnit.SECONDS)).isTrue();
        assertThat(job.info().paused()).isTrue();
        int atSource = source.requests();
        int atTarget = target.requests();
        // Several looks at the job (each is a lock round trip the job could slip a chunk past).
        for (int i = 0; i < 50; i++) {
            assertThat(job.info().paused()).isTrue();
            Thread.onSpinWait();
        }
        assertThat(source.requests()).as("source requests while paused").isEqualTo(atSource);
        assertThat(target.requests()).as("target requests while paused").isEqualTo(atTarget);
        job.userResume();
    }

    @Test
    void backupIsPausedOnlyOnceItsWorkersAreDone() throws Exception {
        BlockNode src = gatedSource();
        BlockNode tgt = GatedDriver.over(file("tgt", new byte[SIZE]), "gtgt");
        // more workers than chunks: the dispatcher is free to reach its pause point at once
        BlockCopy copy = new BlockCopy(src, tgt, SIZE, 64 * 1024, BlockCopy.MAX_CHUNK, 8, false);
        BackupGraph bg = BackupGraph.prepare(graph, devices, src, copy, null, tgt, false);
        BackupJob driver = new BackupJob(copy, src, MirrorSyncMode.FULL, BlockdevOnError.REPORT,
                BlockdevOnError.REPORT, 8, bg);
        Job job = registry.create("b0", driver, List.of(), 0, true, true);
        job.context().setLen(SIZE);
        copy.onProgress(job.context()::addOffset);
        GatedDriver.of(src).hold();
        registry.start(job);
        assertPauseWaitsForChunksInFlight(job, GatedDriver.of(src), GatedDriver.of(tgt));
        assertThat(job.awaitEnd(20, TimeUnit.SECONDS)).isTrue();
        assertThat(events.events()).contains("COMPLETED");
        assertThat(Files.readAllBytes(dir.resolve("tgt"))).isEqualTo(data);
    }

    @Test
    void mirrorIsPausedOnlyOnceItsOperationsAreDone() throws Exception {
        BlockNode src = gatedSource();
        BlockNode tgt = GatedDriver.over(file("tgt", new byte[SIZE]), "gtgt");
        DirtyBitmap bitmap = new DirtyBitmap(SIZE, 64 * 1024);
        src.bitmaps().adopt(bitmap); // as MirrorCommands: the source records guest writes
        JobTopFilter filter = new JobTopFilter("mirror_top", src, null);
        MirrorJob driver = new MirrorJob(new MirrorJob.Params(JobType.MIRROR, MirrorSyncMode.FULL, null,
                MirrorJob.DEFAULT_BUF_SIZE, BlockdevOnError.REPORT, BlockdevOnError.REPORT, true, false),
                src, tgt, filter, bitmap, new MirrorJob.GraphActions() {
                    @Override
                    public jblockd.device.DrainedSection drain() {
                        return new jblockd.device.Devices(graph).drain(src);
                    }

                    @Override
                    public void pivot() {
                    }

                    @Override
                    public void detach() {
                    }

                    @Override
                    public void release(boolean pivoted) {
                    }
                });
        Job job = registry.create("m0", driver, List.of(), 0, true, true);
        GatedDriver.of(src).hold();
        registry.start(job);
        assertPauseWaitsForChunksInFlight(job, GatedDriver.of(src), GatedDriver.of(tgt));
        events.await("READY");
        job.userCancel(false);
        assertThat(job.awaitEnd(20, TimeUnit.SECONDS)).isTrue();
        assertThat(events.events()).contains("COMPLETED");
        assertThat(Files.readAllBytes(dir.resolve("tgt"))).isEqualTo(data);
    }
}
