package jblockd.commands;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.DriverRegistry;
import jblockd.block.Errno;
import jblockd.block.NodeGraph;
import jblockd.device.Device;
import jblockd.device.Devices;
import jblockd.job.Job;
import jblockd.job.JobRegistry;
import jblockd.job.RecordingEvents;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.IoStatus;
import jblockd.qapi.JobStatus;
import jblockd.qapi.MirrorSyncMode;
import jblockd.qapi.QmpError;

/**
 * blockdev-mirror in one JVM over file nodes, with a guest writing through the device while the
 * job runs: READY, pivot, soft/force cancel, parameter errors, error policies.
 */
class MirrorJobTest {
    private static final int SIZE = 8 << 20;

    private final RecordingEvents events = new RecordingEvents();
    private final NodeGraph graph = new NodeGraph(DriverRegistry.standard());
    private final Devices devices = new Devices(graph);
    private final JobRegistry jobs = new JobRegistry(events, graph);
    private final MirrorCommands mirror = new MirrorCommands(graph, devices, jobs);

    @TempDir
    Path dir;

    private Device device;
    private BlockNode src;
    private BlockNode tgt;
    private byte[] model;
    private Guest guest;

    @AfterEach
    void tearDown() throws Exception {
        if (guest != null) {
            guest.stop();
        }
        jobs.cancelAll(5, TimeUnit.SECONDS);
        graph.closeAll();
    }

    private void setUp() throws Exception {
        model = new byte[SIZE];
        new Random(1).nextBytes(model);
        Files.write(dir.resolve("src.img"), model);
        Files.write(dir.resolve("tgt.img"), new byte[SIZE]);
        src = graph.add(new BlockdevOptions.File(BlockdevOptions.Common.defaults().withNodeName("src"),
                dir.resolve("src.img").toString()));
        tgt = graph.add(new BlockdevOptions.File(BlockdevOptions.Common.defaults().withNodeName("tgt"),
                dir.resolve("tgt.img").toString()));
        device = new Device("drive0", src, BlockdevOnError.REPORT, BlockdevOnError.ENOSPC);
        devices.add(device);
    }

    /** A guest writing 4 KiB blocks at random places through the device, recording them in the model. */
    private final class Guest {
        final AtomicBoolean stop = new AtomicBoolean();
        final AtomicReference<Throwable> failure = new AtomicReference<>();
        final Thread thread;
        volatile long writes;

        Guest() {
            thread = Thread.ofVirtual().start(() -> {
                Random r = new Random(7);
                // the guest's path: the run state and the device's drain counter
                jblockd.device.GuestIo io = new jblockd.device.GuestIo(device,
                        new jblockd.device.RunState(events, () -> { }), events);
                byte[] block = new byte[4096];
                try {
                    while (!stop.get()) {
                        long off = (long) r.nextInt(SIZE / 4096) * 4096;
                        r.nextBytes(block);
                        io.write(off, ByteBuffer.wrap(block), false);
                        System.arraycopy(block, 0, model, (int) off, 4096);
                        writes++;
                        Thread.sleep(0, 200_000);
                    }
                } catch (Throwable t) {
                    failure.set(t);
                }
            });
        }

        void stop() throws Exception {
            stop.set(true);
            thread.join(5000);
            assertThat(failure.get()).isNull();
        }
    }

    private void awaitGuestWrites(long atLeast) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (guest.writes < atLeast && System.nanoTime() < deadline) {
            Thread.sleep(1);
        }
        assertThat(guest.writes).as("guest writes").isGreaterThanOrEqualTo(atLeast);
    }

    private MirrorCommands.BlockdevMirrorArgs args(MirrorSyncMode sync, Long speed, Long granularity) {
        return new MirrorCommands.BlockdevMirrorArgs(null, "drive0", "tgt", null, sync, speed, granularity,
                null, null, null, null, null, null, null);
    }

    private byte[] read(BlockNode n) throws Exception {
        ByteBuffer b = ByteBuffer.allocate(SIZE);
        n.read(0, b);
        return b.array();
    }

    @Test
    void completeUnderGuestWritesPivotsAndLosesNoWrite() throws Exception {
        setUp();
        guest = new Guest();
        Job job = mirror.blockdevMirror(args(MirrorSyncMode.FULL, null, null));
        assertThat(job.id()).isEqualTo("drive0");
        assertThat(device.root().driver().driverName()).isEqualTo("mirror_top");
        events.await("READY");
        assertThat(job.info().ready()).isTrue();
        assertThat(job.info().offset()).isEqualTo(job.info().len());
        // some guest writes while READY, and more after the pivot (counted, not timed: a loaded
        // machine may schedule the guest thread rarely)
        awaitGuestWrites(guest.writes + 10);
        job.complete();
        assertThat(job.awaitStatus(JobStatus.NULL, 10, TimeUnit.SECONDS)).isTrue();
        awaitGuestWrites(guest.writes + 5);
        guest.stop();
        assertThat(device.root()).isSameAs(tgt);
        assertThat(read(tgt)).isEqualTo(model);
        List<String> ev = events.events();
        assertThat(ev).containsSubsequence("J(created)", "J(running)", "J(ready)", "READY", "J(waiting)",
                "J(pending)", "COMPLETED", "J(concluded)", "J(null)");
        assertThat(ev).doesNotContain("J(aborting)");
        assertThat(graph.node(job.id())).isEmpty();
    }

    @Test
    void softCancelAfterReadyKeepsSourceAndLeavesExactCopy() throws Exception {
        setUp();
        guest = new Guest();
        Job job = mirror.blockdevMirror(args(MirrorSyncMode.FULL, null, 4096L));
        events.await("READY");
        Thread.sleep(50);
        guest.stop();
        new JobCommands(jobs).blockJobCancel("drive0", false);
        assertThat(job.awaitStatus(JobStatus.NULL, 10, TimeUnit.SECONDS)).isTrue();
        assertThat(events.events()).containsSubsequence("READY", "J(waiting)", "J(pending)", "COMPLETED",
                "J(concluded)", "J(null)").doesNotContain("J(aborting)", "CANCELLED");
        assertThat(device.root()).isSameAs(src);
        assertThat(read(src)).isEqualTo(model);
        assertThat(read(tgt)).isEqualTo(model);
    }

    @Test
    void cancelBeforeReadyEndsCancelledOnTheSource() throws Exception {
        setUp();
        Job job = mirror.blockdevMirror(args(MirrorSyncMode.FULL, 1L << 20, null));
        Thread.sleep(100);
        new JobCommands(jobs).blockJobCancel("drive0", false);
        assertThat(job.awaitStatus(JobStatus.NULL, 10, TimeUnit.SECONDS)).isTrue();
        assertThat(events.events()).containsSubsequence("J(aborting)", "CANCELLED", "J(concluded)", "J(null)")
                .doesNotContain("READY");
        assertThat(device.root()).isSameAs(src);
    }

    @Test
    void pauseWhileReadyIsStandbyAndResumeGoesBackToReady() throws Exception {
        setUp();
        Job job = mirror.blockdevMirror(args(MirrorSyncMode.FULL, null, null));
        events.await("READY");
        job.userPause();
        assertThat(job.info().status()).isEqualTo(JobStatus.STANDBY);
        assertThat(job.info().paused()).isTrue();
        job.complete();
        Thread.sleep(50);
        assertThat(job.info().status()).isEqualTo(JobStatus.STANDBY);
        job.userResume();
        assertThat(job.awaitStatus(JobStatus.NULL, 10, TimeUnit.SECONDS)).isTrue();
        assertThat(events.events()).containsSubsequence("READY", "J(standby)", "J(ready)", "J(waiting)", "COMPLETED");
        assertThat(device.root()).isSameAs(tgt);
    }

    @Test
    void speedLimitHoldsAndSetSpeedAppliesLive() throws Exception {
        setUp();
        long t0 = System.nanoTime();
        Job job = mirror.blockdevMirror(args(MirrorSyncMode.FULL, 16L << 20, null));
        Thread.sleep(250);
        long offset = job.info().offset();
        // 16 MiB/s for ~0.25 s (plus the first request QEMU also grants up front)
        assertThat(offset).isBetween(2L << 20, 7L << 20);
        job.setSpeed(0);
        events.await("READY");
        assertThat(System.nanoTime() - t0).isLessThan(java.util.concurrent.TimeUnit.SECONDS.toNanos(5));
    }

    @Test
    void forceCancelAfterReadyIsCancelled() throws Exception {
        setUp();
        Job job = mirror.blockdevMirror(args(MirrorSyncMode.FULL, null, null));
        events.await("READY");
        new JobCommands(jobs).blockJobCancel("drive0", true);
        assertThat(job.awaitStatus(JobStatus.NULL, 10, TimeUnit.SECONDS)).isTrue();
        assertThat(events.events()).containsSubsequence("READY", "J(aborting)", "CANCELLED", "J(null)");
        assertThat(device.root()).isSameAs(src);
    }

    @Test
    void manualFinalizeKeepsGuestsWritingUntilThePivot() throws Exception {
        setUp();
        guest = new Guest();
        Job job = mirror.blockdevMirror(new MirrorCommands.BlockdevMirrorArgs(null, "drive0", "tgt", null,
                MirrorSyncMode.FULL, null, null, null, null, null, null, null, false, false));
        events.await("READY");
        job.complete();
        events.await("PENDING");
        long before = guest.writes;
        Thread.sleep(100);
        assertThat(guest.writes).as("guest writes go on while the job waits in pending").isGreaterThan(before);
        assertThat(device.root()).isNotSameAs(tgt);
        job.finalizeJob();
        assertThat(events.events()).containsSubsequence("J(pending)", "PENDING", "COMPLETED", "J(concluded)");
        assertThat(device.root()).isSameAs(tgt);
        job.dismiss();
        Thread.sleep(30);
        guest.stop();
        assertThat(read(tgt)).isEqualTo(model);
    }

    @Test
    void syncNoneIsReadyAtOnceAndCopiesOnlyNewWrites() throws Exception {
        setUp();
        Job job = mirror.blockdevMirror(args(MirrorSyncMode.NONE, null, null));
        events.await("READY");
        byte[] block = new byte[65536];
        java.util.Arrays.fill(block, (byte) 0x5a);
        device.root().write(1 << 20, ByteBuffer.wrap(block), false);
        Thread.sleep(50);
        job.complete();
        assertThat(job.awaitStatus(JobStatus.NULL, 10, TimeUnit.SECONDS)).isTrue();
        byte[] t = read(tgt);
        assertThat(java.util.Arrays.copyOfRange(t, 1 << 20, (1 << 20) + 65536)).isEqualTo(block);
        assertThat(t[0]).isEqualTo((byte) 0);
    }

    @Test
    void granularityAndBufSizeAreCheckedWithQemuTexts() throws Exception {
        setUp();
        assertThatThrownBy(() -> mirror.blockdevMirror(args(MirrorSyncMode.FULL, null, 256L)))
                .hasMessage("Parameter 'granularity' expects a value in range [512B, 64MB]");
        assertThatThrownBy(() -> mirror.blockdevMirror(args(MirrorSyncMode.FULL, null, 3000L)))
                .hasMessage("Parameter 'granularity' expects a power of 2");
        assertThatThrownBy(() -> mirror.blockdevMirror(new MirrorCommands.BlockdevMirrorArgs(null, "drive0", "tgt",
                null, MirrorSyncMode.FULL, null, null, -1L, null, null, null, null, null, null)))
                .hasMessage("Invalid parameter 'buf-size'");
        assertThatThrownBy(() -> mirror.blockdevMirror(args(MirrorSyncMode.INCREMENTAL, null, null)))
                .hasMessage("Sync mode 'incremental' not supported");
        assertThatThrownBy(() -> mirror.blockdevMirror(args(MirrorSyncMode.FULL, -1L, null)))
                .hasMessage("Parameter 'speed' expects a non-negative value");
        assertThatThrownBy(() -> mirror.blockdevMirror(new MirrorCommands.BlockdevMirrorArgs(null, "tgt", "src",
                null, MirrorSyncMode.FULL, null, null, null, null, null, null, null, null, null)))
                .isInstanceOf(QmpError.class).hasMessage("Invalid job ID ''");
        assertThatThrownBy(() -> mirror.blockdevMirror(new MirrorCommands.BlockdevMirrorArgs(null, "nope", "tgt",
                null, MirrorSyncMode.FULL, null, null, null, null, null, null, null, null, null)))
                .hasMessage("Cannot find device='nope' nor node-name='nope'");
        assertThat(events.events()).containsExactly("J(created)", "J(null)");
        assertThat(device.root()).isSameAs(src);
    }

    @Test
    void secondJobOnTheDeviceIsRefusedAndRootCheckHolds() throws Exception {
        setUp();
        mirror.blockdevMirror(args(MirrorSyncMode.FULL, 1L << 20, null));
        assertThatThrownBy(() -> mirror.blockdevMirror(args(MirrorSyncMode.FULL, null, null)))
                .hasMessage("Node 'drive0' is busy: block device is in use by block job: mirror");
        assertThatThrownBy(() -> mirror.blockdevMirror(new MirrorCommands.BlockdevMirrorArgs("x", "src", "tgt",
                null, MirrorSyncMode.FULL, null, null, null, null, null, null, null, null, null)))
                .hasMessage("Need a root block node");
    }

    private BlockNode faultyTarget(FaultyDriver[] out) throws Exception {
        Files.write(dir.resolve("tgt2.img"), new byte[SIZE]);
        BlockNode file = graph.add(new BlockdevOptions.File(BlockdevOptions.Common.defaults(),
                dir.resolve("tgt2.img").toString()));
        FaultyDriver f = new FaultyDriver(file);
        BlockNode n = new BlockNode("ftgt", false, f, false);
        graph.register(n);
        out[0] = f;
        return n;
    }

    @Test
    void targetErrorWithIgnoreRetriesTheChunkUntilItIsCopied() throws Exception {
        setUp();
        FaultyDriver[] f = new FaultyDriver[1];
        BlockNode ft = faultyTarget(f);
        f[0].arm(1 << 20, 4096, false, Errno.EIO, 3);
        Job job = mirror.blockdevMirror(new MirrorCommands.BlockdevMirrorArgs(null, "drive0", "ftgt", null,
                MirrorSyncMode.FULL, null, null, null, null, BlockdevOnError.IGNORE, null, null, null, null));
        events.await("READY");
        assertThat(events.events().stream().filter(e -> e.equals("ERROR(write,ignore)")).count()).isEqualTo(3);
        job.complete();
        assertThat(job.awaitStatus(JobStatus.NULL, 10, TimeUnit.SECONDS)).isTrue();
        assertThat(events.events()).contains("COMPLETED");
        assertThat(read(ft)).isEqualTo(model);
    }

    @Test
    void persistentErrorWithIgnoreBacksOffInsteadOfSpinning() throws Exception {
        setUp();
        FaultyDriver[] f = new FaultyDriver[1];
        faultyTarget(f);
        f[0].arm(1 << 20, 4096, false, Errno.EIO, -1);
        Job job = mirror.blockdevMirror(new MirrorCommands.BlockdevMirrorArgs(null, "drive0", "ftgt", null,
                MirrorSyncMode.FULL, null, null, null, null, BlockdevOnError.IGNORE, null, null, null, null));
        Thread.sleep(1500);
        long errors = events.events().stream().filter(e -> e.equals("ERROR(write,ignore)")).count();
        // QEMU 7.2 retries in a tight loop (SPEC §7); the back-off keeps it to a handful
        assertThat(errors).isBetween(2L, 20L);
        assertThat(job.info().ready()).isFalse();
        assertThat(job.info().offset()).isEqualTo(SIZE - (1L << 20));
        f[0].remaining.set(0);
        events.await("READY");
        job.complete();
        assertThat(job.awaitStatus(JobStatus.NULL, 10, TimeUnit.SECONDS)).isTrue();
    }

    @Test
    void sourceErrorWithStopPausesAndResumeRetries() throws Exception {
        setUp();
        FaultyDriver fd = new FaultyDriver(src);
        BlockNode fsrc = new BlockNode("fsrc", false, fd, false);
        graph.register(fsrc);
        Device d2 = new Device("drive1", fsrc, BlockdevOnError.REPORT, BlockdevOnError.ENOSPC);
        devices.add(d2);
        fd.arm(2 << 20, 4096, true, Errno.ENOSPC, 1);
        Job job = mirror.blockdevMirror(new MirrorCommands.BlockdevMirrorArgs(null, "drive1", "tgt", null,
                MirrorSyncMode.FULL, null, null, null, BlockdevOnError.ENOSPC, null, null, null, null, null));
        events.await("J(paused)");
        assertThat(events.events()).containsSubsequence("ERROR(read,stop)", "J(paused)");
        assertThat(job.info().ioStatus()).isEqualTo(IoStatus.NOSPACE);
        assertThat(job.info().paused()).isTrue();
        job.userResume();
        events.await("READY");
        assertThat(job.info().ioStatus()).isEqualTo(IoStatus.OK);
        job.complete();
        assertThat(job.awaitStatus(JobStatus.NULL, 10, TimeUnit.SECONDS)).isTrue();
        assertThat(read(tgt)).isEqualTo(model);
        assertThat(d2.root()).isSameAs(tgt);
    }

    @Test
    void targetErrorWithReportFailsTheJobAndKeepsTheSource() throws Exception {
        setUp();
        FaultyDriver[] f = new FaultyDriver[1];
        faultyTarget(f);
        f[0].arm(3 << 20, 4096, false, Errno.EIO, -1);
        Job job = mirror.blockdevMirror(new MirrorCommands.BlockdevMirrorArgs(null, "drive0", "ftgt", null,
                MirrorSyncMode.FULL, null, null, null, null, null, null, null, null, null));
        assertThat(job.awaitStatus(JobStatus.NULL, 10, TimeUnit.SECONDS)).isTrue();
        assertThat(events.events()).containsSubsequence("ERROR(write,report)", "J(aborting)",
                "COMPLETED(Input/output error)", "J(concluded)", "J(null)");
        assertThat(device.root()).isSameAs(src);
    }
}
