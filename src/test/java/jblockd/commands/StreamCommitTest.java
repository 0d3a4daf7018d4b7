package jblockd.commands;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.Allocation;
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
import jblockd.qapi.ErrorClass;
import jblockd.qapi.JobStatus;
import jblockd.qapi.QmpError;

/**
 * block-stream and block-commit in one JVM on a three-layer copy-on-write chain
 * (base: 0-4M, mid: 4-8M, top: 8-12M of a 16 MiB disk), with guest writes during the jobs.
 */
class StreamCommitTest {
    private static final int SIZE = 16 << 20;
    private static final int MIB = 1 << 20;

    private final RecordingEvents events = new RecordingEvents();
    private final NodeGraph graph = new NodeGraph(DriverRegistry.standard());
    private final Devices devices = new Devices(graph);
    private final JobRegistry jobs = new JobRegistry(events, graph);
    private final StreamCommitCommands cmds = new StreamCommitCommands(graph, devices, jobs);

    @TempDir
    Path dir;

    private BlockNode base;
    private BlockNode mid;
    private BlockNode top;
    private CowTestDriver topDrv;
    private FaultyDriver baseFault;
    private Device device;
    private final byte[] model = new byte[SIZE];

    @BeforeEach
    void setUp() throws Exception {
        BlockNode baseFile = file("base.img");
        baseFault = new FaultyDriver(baseFile);
        BlockNode faultyBaseFile = new BlockNode("base-file", false, baseFault, false);
        graph.register(faultyBaseFile);
        base = layer("base", faultyBaseFile, null);
        mid = layer("mid", file("mid.img"), base);
        topDrv = null;
        top = layer("top", file("top.img"), mid);
        topDrv = (CowTestDriver) top.driver();
        fill(base, 0, 0x11);
        fill(mid, 4 * MIB, 0x22);
        fill(top, 8 * MIB, 0x33);
        device = new Device("drive0", top, BlockdevOnError.REPORT, BlockdevOnError.ENOSPC);
        devices.add(device);
    }

    @AfterEach
    void tearDown() {
        jobs.cancelAll(5, TimeUnit.SECONDS);
        graph.closeAll();
    }

    private BlockNode file(String name) throws Exception {
        Files.write(dir.resolve(name), new byte[0]);
        return graph.add(new BlockdevOptions.File(BlockdevOptions.Common.defaults(), dir.resolve(name).toString()));
    }

    private BlockNode layer(String name, BlockNode file, BlockNode backing) throws Exception {
        BlockNode n = new BlockNode(name, false, new CowTestDriver(file, SIZE, backing), false);
        graph.register(n);
        return n;
    }

    private void fill(BlockNode n, int off, int value) throws Exception {
        byte[] b = new byte[4 * MIB];
        Arrays.fill(b, (byte) value);
        n.write(off, ByteBuffer.wrap(b), false);
        System.arraycopy(b, 0, model, off, b.length);
    }

    private byte[] read(BlockNode n) throws Exception {
        ByteBuffer b = ByteBuffer.allocate(SIZE);
        n.read(0, b);
        return b.array();
    }

    private boolean allocated(BlockNode n, long off) throws Exception {
        return n.status(off, 1).allocation() != Allocation.UNALLOCATED;
    }

    /** A guest writing 4 KiB blocks through the device at random offsets. */
    private final class Guest implements AutoCloseable {
        final AtomicBoolean stop = new AtomicBoolean();
        final AtomicReference<Throwable> failure = new AtomicReference<>();
        final Thread thread;

        Guest() {
            thread = Thread.ofVirtual().start(() -> {
                Random r = new Random(3);
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
                        Thread.sleep(0, 300_000);
                    }
                } catch (Throwable t) {
                    failure.set(t);
                }
            });
        }

        @Override
        public void close() throws Exception {
            stop.set(true);
            thread.join(5000);
            assertThat(failure.get()).isNull();
        }
    }

    private StreamCommitCommands.BlockStreamArgs stream(String baseNode, String backingFile, Long speed,
                                                        BlockdevOnError onError) {
        return new StreamCommitCommands.BlockStreamArgs(null, "drive0", null, baseNode, backingFile, null, speed,
                onError, null, null, null);
    }

    private StreamCommitCommands.BlockCommitArgs commit(String topNode, String baseNode) {
        return new StreamCommitCommands.BlockCommitArgs(null, "drive0", baseNode, null, topNode, null, null, null,
                null, null, null, null);
    }

    @Test
    void streamWithBaseCopiesMidIntoTopAndRebasesOntoBase() throws Exception {
        Job job = cmds.blockStream(stream("base", null, null, null));
        assertThat(job.awaitStatus(JobStatus.NULL, 10, TimeUnit.SECONDS)).isTrue();
        assertThat(events.events()).containsSubsequence("J(created)", "J(running)", "J(waiting)", "J(pending)",
                "COMPLETED", "J(concluded)", "J(null)");
        assertThat(top.driver().backing()).isSameAs(base);
        assertThat(topDrv.backingName).isEqualTo(base.driver().filename());
        assertThat(allocated(top, 0)).isFalse();
        assertThat(allocated(top, 4 * MIB)).isTrue();
        assertThat(allocated(top, 12 * MIB)).isFalse();
        assertThat(device.root()).isSameAs(top);
        assertThat(read(top)).isEqualTo(model);
    }

    @Test
    void streamOfTheWholeChainDropsTheBackingFile() throws Exception {
        Job job = cmds.blockStream(stream(null, null, null, null));
        assertThat(job.awaitStatus(JobStatus.NULL, 10, TimeUnit.SECONDS)).isTrue();
        assertThat(top.driver().backing()).isNull();
        assertThat(topDrv.backingName).isNull();
        assertThat(allocated(top, 0)).isTrue();
        assertThat(read(top)).isEqualTo(model);
    }

    @Test
    void streamNeverOverwritesConcurrentGuestWrites() throws Exception {
        Job job;
        try (Guest g = new Guest()) {
            job = cmds.blockStream(stream(null, null, 8L << 20, null));
            assertThat(device.root().driver().driverName()).isEqualTo("copy-on-read");
            assertThat(job.awaitStatus(JobStatus.NULL, 20, TimeUnit.SECONDS)).isTrue();
        }
        assertThat(events.events()).contains("COMPLETED");
        assertThat(top.driver().backing()).isNull();
        assertThat(read(top)).isEqualTo(model);
    }

    @Test
    void streamReadErrorWithIgnoreCompletesWithErrorAndKeepsBacking() throws Exception {
        baseFault.arm(MIB, 4096, true, Errno.EIO, 1);
        Job job = cmds.blockStream(stream(null, null, null, BlockdevOnError.IGNORE));
        assertThat(job.awaitStatus(JobStatus.NULL, 10, TimeUnit.SECONDS)).isTrue();
        assertThat(events.events()).containsSubsequence("ERROR(read,ignore)", "J(aborting)",
                "COMPLETED(Input/output error)", "J(null)");
        assertThat(top.driver().backing()).isSameAs(mid);
        assertThat(read(top)).isEqualTo(model);
    }

    @Test
    void streamReadErrorWithStopPausesAfterOneChunkAndResumeFinishes() throws Exception {
        baseFault.arm(MIB, 4096, true, Errno.EIO, 1);
        Job job = cmds.blockStream(stream(null, null, null, BlockdevOnError.STOP));
        events.await("J(paused)");
        assertThat(job.info().offset()).isEqualTo(2L * 512 * 1024);
        job.userResume();
        assertThat(job.awaitStatus(JobStatus.NULL, 10, TimeUnit.SECONDS)).isTrue();
        assertThat(events.events()).contains("COMPLETED");
        assertThat(top.driver().backing()).isNull();
        assertThat(read(top)).isEqualTo(model);
    }

    @Test
    void streamErrorsUseQemuTexts() {
        assertThatThrownBy(() -> cmds.blockStream(new StreamCommitCommands.BlockStreamArgs(null, "drive0", "nope.img",
                null, null, null, null, null, null, null, null)))
                .hasMessage("Can't find 'nope.img' in the backing chain");
        assertThatThrownBy(() -> cmds.blockStream(stream(null, "x.img", null, null)))
                .hasMessage("backing file specified, but streaming the entire chain");
        assertThatThrownBy(() -> cmds.blockStream(stream("zz", null, null, null)))
                .hasMessage("Cannot find device='' nor node-name='zz'");
        assertThat(events.events()).isEmpty();
    }

    @Test
    void intermediateCommitMovesMidIntoBaseAndDropsIt() throws Exception {
        Job job = cmds.blockCommit(commit("mid", "base"));
        assertThat(job.id()).isEqualTo("drive0");
        assertThat(job.awaitStatus(JobStatus.NULL, 10, TimeUnit.SECONDS)).isTrue();
        assertThat(events.events()).containsSubsequence("J(waiting)", "J(pending)", "COMPLETED", "J(null)")
                .doesNotContain("READY");
        assertThat(top.driver().backing()).isSameAs(base);
        assertThat(allocated(base, 5 * MIB)).isTrue();
        assertThat(read(top)).isEqualTo(model);
    }

    @Test
    void intermediateCommitPutsCommitTopBetweenOverlayAndTopUntilTheJobEnds() throws Exception {
        baseFault.arm(5 * MIB, 4096, false, Errno.ENOSPC, -1);
        Job job = cmds.blockCommit(new StreamCommitCommands.BlockCommitArgs(null, "drive0", "base", null, "mid",
                null, null, null, BlockdevOnError.ENOSPC, "ct", null, null));
        events.await("J(paused)");
        BlockNode ct = graph.node("ct").orElseThrow();
        assertThat(ct.driver().driverName()).isEqualTo("commit_top");
        assertThat(ct.readOnly()).isTrue();
        assertThat(top.driver().backing()).isSameAs(ct);
        assertThat(ct.driver().filtered()).isSameAs(mid);
        assertThat(read(top)).isEqualTo(model);
        new JobCommands(jobs).blockJobCancel(job.id(), true);
        assertThat(job.awaitStatus(JobStatus.NULL, 10, TimeUnit.SECONDS)).isTrue();
        assertThat(graph.node("ct")).as("commit_abort() drops the filter").isEmpty();
        assertThat(top.driver().backing()).isSameAs(mid);
        assertThat(read(top)).isEqualTo(model);

        baseFault.arm(0, 0, false, Errno.EIO, 0);
        Job again = cmds.blockCommit(new StreamCommitCommands.BlockCommitArgs(null, "drive0", "base", null, "mid",
                null, null, null, null, "ct", null, null));
        assertThat(again.awaitStatus(JobStatus.NULL, 10, TimeUnit.SECONDS)).isTrue();
        assertThat(graph.node("ct")).isEmpty();
        assertThat(top.driver().backing()).isSameAs(base);
        assertThat(read(top)).isEqualTo(model);
    }

    @Test
    void activeCommitIsReadyThenCompleteSwitchesTheDeviceToBase() throws Exception {
        Job job;
        try (Guest g = new Guest()) {
            job = cmds.blockCommit(commit(null, null));
            events.await("READY");
            assertThat(job.type().wire()).isEqualTo("commit");
            Thread.sleep(50);
            job.complete();
            assertThat(job.awaitStatus(JobStatus.NULL, 10, TimeUnit.SECONDS)).isTrue();
            Thread.sleep(20);
        }
        assertThat(device.root()).isSameAs(base);
        assertThat(events.events()).containsSubsequence("J(ready)", "READY", "J(waiting)", "J(pending)", "COMPLETED",
                "J(concluded)", "J(null)");
        assertThat(read(base)).isEqualTo(model);
    }

    @Test
    void activeCommitSoftCancelAfterReadyStaysOnTop() throws Exception {
        Job job = cmds.blockCommit(commit(null, null));
        events.await("READY");
        new JobCommands(jobs).blockJobCancel(job.id(), false);
        assertThat(job.awaitStatus(JobStatus.NULL, 10, TimeUnit.SECONDS)).isTrue();
        assertThat(events.events()).contains("COMPLETED").doesNotContain("CANCELLED");
        assertThat(device.root()).isSameAs(top);
        assertThat(read(base)).isEqualTo(model);
        assertThat(read(top)).isEqualTo(model);
    }

    @Test
    void commitWriteErrorWithIgnoreRetriesTheChunk() throws Exception {
        baseFault.arm(5 * MIB, 4096, false, Errno.EIO, 2);
        Job job = cmds.blockCommit(new StreamCommitCommands.BlockCommitArgs(null, "drive0", "base", null, "mid",
                null, null, null, BlockdevOnError.IGNORE, null, null, null));
        assertThat(job.awaitStatus(JobStatus.NULL, 10, TimeUnit.SECONDS)).isTrue();
        assertThat(events.events()).containsSubsequence("ERROR(write,ignore)", "ERROR(write,ignore)", "COMPLETED",
                "J(null)").doesNotContain("J(aborting)");
        assertThat(top.driver().backing()).isSameAs(base);
        assertThat(read(top)).isEqualTo(model);
    }

    @Test
    void commitEnospcWithEnospcPolicyStopsWithNospaceAndForceCancelKeepsTheChain() throws Exception {
        baseFault.arm(5 * MIB, 4096, false, Errno.ENOSPC, -1);
        Job job = cmds.blockCommit(new StreamCommitCommands.BlockCommitArgs(null, "drive0", "base", null, "mid",
                null, null, null, BlockdevOnError.ENOSPC, null, null, null));
        events.await("J(paused)");
        assertThat(job.info().ioStatus()).isEqualTo(jblockd.qapi.IoStatus.NOSPACE);
        new JobCommands(jobs).blockJobCancel(job.id(), true);
        assertThat(job.awaitStatus(JobStatus.NULL, 10, TimeUnit.SECONDS)).isTrue();
        assertThat(events.events()).containsSubsequence("ERROR(write,stop)", "J(paused)", "J(aborting)", "CANCELLED");
        assertThat(top.driver().backing()).isSameAs(mid);
        assertThat(read(top)).isEqualTo(model);
    }

    @Test
    void commitErrorsUseQemuTexts() throws Exception {
        assertThatThrownBy(() -> cmds.blockCommit(commit("base", "base")))
                .hasMessage("cannot commit an image into itself");
        assertThatThrownBy(() -> cmds.blockCommit(new StreamCommitCommands.BlockCommitArgs(null, "drive0", null,
                null, null, "/no/such.img", null, null, null, null, null, null)))
                .hasMessage("Top image file /no/such.img not found");
        assertThatThrownBy(() -> cmds.blockCommit(new StreamCommitCommands.BlockCommitArgs(null, "drive0", null,
                "/no/base.img", null, null, null, null, null, null, null, null)))
                .hasMessage("Can't find '/no/base.img' in the backing chain");
        assertThatThrownBy(() -> cmds.blockCommit(new StreamCommitCommands.BlockCommitArgs(null, "nodev", null,
                null, null, null, null, null, null, null, null, null)))
                .isInstanceOfSatisfying(QmpError.class, e -> assertThat(e.errorClass()).isEqualTo(ErrorClass.DEVICE_NOT_FOUND))
                .hasMessage("Device 'nodev' not found");
        assertThat(events.events()).isEmpty();
    }
}
