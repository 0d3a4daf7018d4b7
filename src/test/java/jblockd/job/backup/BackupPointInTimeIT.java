package jblockd.job.backup;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.DriverRegistry;
import jblockd.block.NodeGraph;
import jblockd.block.NodeUser;
import jblockd.commands.BackupCommands;
import jblockd.commands.BackupCommands.BlockdevBackupArgs;
import jblockd.commands.JobCommands;
import jblockd.device.Device;
import jblockd.device.Devices;
import jblockd.job.Job;
import jblockd.job.JobRegistry;
import jblockd.job.RecordingEvents;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.MirrorSyncMode;

/**
 * Point-in-time backup in one JVM over plain file nodes: guest writes go through the device
 * (and so through the copy-before-write filter) from a virtual thread while a slow backup runs;
 * the target must equal the image as it was when the command returned (qemu-img compare) and
 * the source must hold every new write.
 */
class BackupPointInTimeIT {
    private static final int SIZE = 32 << 20;

    @TempDir
    Path dir;

    private final RecordingEvents events = new RecordingEvents();
    private NodeGraph graph;
    private Devices devices;
    private JobRegistry jobs;
    private BackupCommands backup;
    private JobCommands jobCommands;

    @BeforeEach
    void setUp() {
        Proc.assumeTools("qemu-img", "qemu-io");
        graph = new NodeGraph(DriverRegistry.standard());
        devices = new Devices(graph);
        jobs = new JobRegistry(events, graph);
        backup = new BackupCommands(graph, devices, jobs);
        jobCommands = new JobCommands(jobs);
    }

    @AfterEach
    void tearDown() {
        if (jobs != null) {
            jobs.cancelAll(10, TimeUnit.SECONDS);
            graph.closeAll();
        }
    }

    private BlockNode fileNode(String name, Path p) throws Exception {
        return graph.add(new BlockdevOptions.File(BlockdevOptions.Common.defaults().withNodeName(name), p.toString()));
    }

    private static BlockdevBackupArgs args(String device, String target, MirrorSyncMode sync, long speed,
                                           BlockdevOnError src, BlockdevOnError tgt) {
        return new BlockdevBackupArgs(null, device, target, sync, speed, null, null, null, src, tgt, null, null,
                null, null);
    }

    @Test
    void guestWritesDuringSlowBackupDoNotReachTheTarget() throws Exception {
        for (long seed : new long[] {1, 2, 3}) {
            runPointInTime(seed);
        }
    }

    private void runPointInTime(long seed) throws Exception {
        Path src = dir.resolve("src" + seed + ".raw");
        Path tgt = dir.resolve("tgt" + seed + ".raw");
        Path pre = dir.resolve("pre" + seed + ".raw");
        Proc.ok("qemu-img", "create", "-q", "-f", "raw", src.toString(), String.valueOf(SIZE));
        Proc.ok("qemu-img", "create", "-q", "-f", "raw", tgt.toString(), String.valueOf(SIZE));
        // a recognisable, non-zero initial image with a hole in the middle
        Proc.ok("qemu-io", "-f", "raw", "-c", "write -P 0x11 0 12M", "-c", "write -P 0x22 20M 12M", src.toString());
        Files.copy(src, pre, StandardCopyOption.REPLACE_EXISTING);

        BlockNode srcNode = fileNode("src" + seed, src);
        fileNode("tgt" + seed, tgt);
        Device drive = new Device("drive" + seed, srcNode, BlockdevOnError.REPORT, BlockdevOnError.REPORT);
        devices.add(drive);
        byte[] model = Files.readAllBytes(src);

        events.clear();
        Job job = backup.blockdevBackup(args("drive" + seed, "tgt" + seed, MirrorSyncMode.FULL, 16L << 20, null, null));
        assertThat(events.events()).containsExactly("J(created)", "J(running)", "J(paused)", "J(running)");
        assertThat(drive.root()).isNotSameAs(srcNode); // the filter is in place before the reply
        assertThat(drive.root().driver().driverName()).isEqualTo("copy-before-write");

        Random rnd = new Random(seed);
        int writes = 0;
        // random writes while the background copy is under way, then a sequential sweep of new
        // data over the whole disk, then random writes again until the job ends
        long sweepAt = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(500);
        boolean swept = false;
        while ((!swept || job.info().status().wire().matches("running|paused|created")) && writes < 20000) {
            if (!swept && System.nanoTime() > sweepAt) {
                assertThat(job.info().offset()).isBetween(1L, (long) SIZE - 1);
                for (int off = 0; off < SIZE; off += 256 * 1024) {
                    writes += guestWrite(drive, model, off, 256 * 1024, (byte) (0x40 + seed));
                }
                swept = true;
                continue;
            }
            int len = (1 + rnd.nextInt(16)) * 4096;
            int off = rnd.nextInt((SIZE - len) / 512) * 512;
            writes += guestWrite(drive, model, off, len, (byte) rnd.nextInt(256));
            if (!swept) {
                Thread.sleep(10);
            }
        }
        assertThat(job.awaitEnd(30, TimeUnit.SECONDS)).isTrue();
        events.await("J(null)");
        assertThat(events.events()).containsSubsequence("J(waiting)", "J(pending)", "COMPLETED", "J(concluded)",
                "J(null)");
        assertThat(drive.root()).isSameAs(srcNode); // filter removed

        Proc.ok("qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", pre.toString(), tgt.toString());
        srcNode.flush();
        assertThat(Arrays.equals(Files.readAllBytes(src), model)).as("source holds the guest writes").isTrue();
        assertThat(jobCommands.queryBlockJobs()).isEmpty();
    }

    private static int guestWrite(Device drive, byte[] model, int off, int len, byte value) throws Exception {
        byte[] data = new byte[len];
        Arrays.fill(data, value);
        drive.root().write(off, ByteBuffer.wrap(data), false);
        System.arraycopy(data, 0, model, off, len);
        return 1;
    }

    @Test
    void cancelEndsCancelledWithOffsetBelowLenAndRemovesTheFilter() throws Exception {
        Path src = dir.resolve("s.raw");
        Path tgt = dir.resolve("t.raw");
        Proc.ok("qemu-img", "create", "-q", "-f", "raw", src.toString(), String.valueOf(SIZE));
        Proc.ok("qemu-img", "create", "-q", "-f", "raw", tgt.toString(), String.valueOf(SIZE));
        BlockNode s = fileNode("s", src);
        fileNode("t", tgt);
        Device drive = new Device("drive0", s, BlockdevOnError.REPORT, BlockdevOnError.REPORT);
        devices.add(drive);
        Job job = backup.blockdevBackup(args("drive0", "t", MirrorSyncMode.FULL, 1L << 20, null, null));
        Thread.sleep(300);
        jobCommands.blockJobCancel("drive0", false);
        assertThat(events.events()).endsWith("J(aborting)", "CANCELLED", "J(concluded)", "J(null)");
        assertThat(job.info().offset()).isLessThan(job.info().len());
        assertThat(drive.root()).isSameAs(s);
        assertThat(graph.usersOf(s)).extracting(NodeUser::description).containsExactly("block device 'drive0'");
    }

    @Test
    void syncNoneCopiesOnlyWhatTheGuestOverwritesAndRunsUntilCancelled() throws Exception {
        Path src = dir.resolve("s.raw");
        Path tgt = dir.resolve("t.raw");
        Proc.ok("qemu-img", "create", "-q", "-f", "raw", src.toString(), String.valueOf(SIZE));
        Proc.ok("qemu-img", "create", "-q", "-f", "raw", tgt.toString(), String.valueOf(SIZE));
        Proc.ok("qemu-io", "-f", "raw", "-c", "write -P 0x33 0 32M", src.toString());
        BlockNode s = fileNode("s", src);
        fileNode("t", tgt);
        Device drive = new Device("drive0", s, BlockdevOnError.REPORT, BlockdevOnError.REPORT);
        devices.add(drive);
        Job job = backup.blockdevBackup(args("drive0", "t", MirrorSyncMode.NONE, 0, null, null));
        Thread.sleep(200);
        assertThat(job.info().offset()).isZero();
        drive.root().write(1 << 20, ByteBuffer.wrap(new byte[4096]), false);
        assertThat(job.info().offset()).isEqualTo(64 * 1024);
        jobCommands.blockJobCancel("drive0", false);
        assertThat(events.events()).contains("CANCELLED");
        Proc.ok("qemu-io", "-f", "raw", "-c", "read -P 0x33 1M 64k", "-c", "read -P 0 0 1M",
                "-c", "read -P 0 1088k 1M", tgt.toString());
    }

    @Test
    void secondBackupOnTheSameDeviceIsRefusedAsBusy() throws Exception {
        Path src = dir.resolve("s.raw");
        Proc.ok("qemu-img", "create", "-q", "-f", "raw", src.toString(), String.valueOf(SIZE));
        for (String t : List.of("t1", "t2")) {
            Proc.ok("qemu-img", "create", "-q", "-f", "raw", dir.resolve(t).toString(), String.valueOf(SIZE));
            fileNode(t, dir.resolve(t));
        }
        BlockNode s = fileNode("s", src);
        devices.add(new Device("drive0", s, BlockdevOnError.REPORT, BlockdevOnError.REPORT));
        backup.blockdevBackup(args("drive0", "t1", MirrorSyncMode.FULL, 1L << 20, null, null));
        events.clear();
        org.assertj.core.api.Assertions.assertThatThrownBy(() ->
                        backup.blockdevBackup(args("drive0", "t2", MirrorSyncMode.FULL, 0, null, null)))
                .hasMessage("Node 'drive0' is busy: block device is in use by block job: backup");
        assertThat(events.events()).containsExactly("J(paused)", "J(running)", "J(paused)", "J(running)");
        org.assertj.core.api.Assertions.assertThatThrownBy(() ->
                        backup.blockdevBackup(args("drive0", "drive0", MirrorSyncMode.FULL, 0, null, null)))
                .hasMessage("Source and target cannot be the same");
        org.assertj.core.api.Assertions.assertThatThrownBy(() ->
                        backup.blockdevBackup(args("nosuch", "t2", MirrorSyncMode.FULL, 0, null, null)))
                .hasMessage("Cannot find device='nosuch' nor node-name='nosuch'")
                .satisfies(e -> assertThat(((jblockd.qapi.QmpError) e).errorClass())
                        .isEqualTo(jblockd.qapi.ErrorClass.DEVICE_NOT_FOUND));
    }
}
