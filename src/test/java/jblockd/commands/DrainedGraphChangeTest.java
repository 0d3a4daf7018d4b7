package jblockd.commands;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.DriverRegistry;
import jblockd.block.NodeGraph;
import jblockd.device.Device;
import jblockd.device.Devices;
import jblockd.device.GuestIo;
import jblockd.device.RunState;
import jblockd.job.Job;
import jblockd.job.JobRegistry;
import jblockd.job.GatedDriver;
import jblockd.job.RecordingEvents;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.JobStatus;
import jblockd.qapi.MirrorSyncMode;

/**
 * Graph changes happen in drained sections: a guest request in flight when a job puts its
 * filter in finishes first, so it is covered by the job. Without the drain, a write that was
 * already inside the old root when the mirror's filter went in landed on the source unmarked,
 * after the mirror had copied that range: the pivoted target lacked it.
 */
class DrainedGraphChangeTest {
    private static final int SIZE = 4 << 20;

    private final RecordingEvents events = new RecordingEvents();
    private final NodeGraph graph = new NodeGraph(DriverRegistry.standard());
    private final Devices devices = new Devices(graph);
    private final JobRegistry jobs = new JobRegistry(events, graph);
    private final MirrorCommands mirror = new MirrorCommands(graph, devices, jobs);

    @TempDir
    Path dir;

    @AfterEach
    void tearDown() throws Exception {
        jobs.cancelAll(5, TimeUnit.SECONDS);
        graph.closeAll();
    }

    @Test
    void aGuestWriteInFlightWhenAMirrorStartsReachesTheTarget() throws Exception {
        Files.write(dir.resolve("src.img"), new byte[SIZE]);
        Files.write(dir.resolve("tgt.img"), new byte[SIZE]);
        BlockNode file = graph.add(new BlockdevOptions.File(BlockdevOptions.Common.defaults().withNodeName("file0"),
                dir.resolve("src.img").toString()));
        graph.add(new BlockdevOptions.File(BlockdevOptions.Common.defaults().withNodeName("tgt"),
                dir.resolve("tgt.img").toString()));
        BlockNode src = GatedDriver.over(file, "src");
        GatedDriver gated = GatedDriver.of(src);
        graph.register(src);
        Device device = new Device("drive0", src, BlockdevOnError.REPORT, BlockdevOnError.ENOSPC);
        devices.add(device);
        GuestIo io = new GuestIo(device, new RunState(events, () -> { }), events);

        byte[] data = new byte[64 << 10];
        Arrays.fill(data, (byte) 0x6b);
        gated.holdWrites();
        AtomicReference<Throwable> guestFailure = new AtomicReference<>();
        Thread guest = Thread.ofPlatform().daemon().start(() -> {
            try {
                io.write(0, ByteBuffer.wrap(data), false);
            } catch (Throwable t) {
                guestFailure.set(t);
            }
        });
        assertThat(gated.awaitHeld()).as("the guest write is in flight").isTrue();

        AtomicReference<Job> job = new AtomicReference<>();
        AtomicReference<Throwable> startFailure = new AtomicReference<>();
        Thread starter = Thread.ofPlatform().daemon().start(() -> {
            try {
                job.set(mirror.blockdevMirror(new MirrorCommands.BlockdevMirrorArgs(null, "drive0", "tgt", null,
                        MirrorSyncMode.FULL, null, null, null, null, null, null, null, null, null)));
            } catch (Throwable t) {
                startFailure.set(t);
            }
        });
        // Either the start waits in its drain for the guest write (as it must), or it returned
        // without one: then let the job copy the range first, so the late write shows.
        while (starter.isAlive() && starter.getState() != Thread.State.WAITING) {
            Thread.onSpinWait();
        }
        if (!starter.isAlive()) {
            events.await("READY");
        }
        gated.letGo();
        guest.join(10_000);
        starter.join(10_000);
        assertThat(guestFailure.get()).isNull();
        assertThat(startFailure.get()).isNull();
        events.await("READY");
        job.get().complete();
        assertThat(job.get().awaitStatus(JobStatus.NULL, 10, TimeUnit.SECONDS)).isTrue();

        BlockNode tgt = graph.node("tgt").orElseThrow();
        assertThat(device.root()).isSameAs(tgt);
        ByteBuffer back = ByteBuffer.allocate(data.length);
        tgt.read(0, back);
        assertThat(Arrays.mismatch(back.array(), data))
                .as("first offset where the pivoted target lacks the write in flight when the mirror started")
                .isEqualTo(-1);
    }
}
