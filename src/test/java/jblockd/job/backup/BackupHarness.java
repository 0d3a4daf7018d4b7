package jblockd.job.backup;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import jblockd.block.BlockNode;
import jblockd.block.DriverRegistry;
import jblockd.block.NodeGraph;
import jblockd.commands.BackupCommands;
import jblockd.commands.BackupCommands.BlockdevBackupArgs;
import jblockd.commands.BackupCommands.DriveBackupArgs;
import jblockd.commands.JobCommands;
import jblockd.device.Device;
import jblockd.device.Devices;
import jblockd.job.JobRegistry;
import jblockd.job.RecordingEvents;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.MirrorSyncMode;
import jblockd.qapi.NewImageMode;

/** One in-JVM "daemon" for backup tests: graph, devices, jobs, the two command groups. */
final class BackupHarness implements AutoCloseable {
    final RecordingEvents events = new RecordingEvents();
    final NodeGraph graph = new NodeGraph(DriverRegistry.standard());
    final Devices devices = new Devices(graph);
    final JobRegistry jobs = new JobRegistry(events, graph);
    final BackupCommands backup = new BackupCommands(graph, devices, jobs);
    final JobCommands jobCommands = new JobCommands(jobs);

    /** Skips the test until the drivers it needs are registered (they land from other branches). */
    void assumeDrivers(String... names) {
        for (String n : names) {
            assumeTrue(graph.drivers().factory(n) != null, "driver " + n + " not registered yet");
        }
    }

    /** A --drive: format node over file (or blkdebug:CONF:PATH), as a named device. */
    Device drive(String name, String file, String format) throws Exception {
        BlockNode root = graph.add(graph.imageOptions(Path.of(file), format, false, false, null));
        Device d = new Device(name, root, BlockdevOnError.REPORT, BlockdevOnError.ENOSPC);
        devices.add(d);
        return d;
    }

    BlockNode node(String nodeName, String file, String format) throws Exception {
        return graph.add(graph.imageOptions(Path.of(file), format, false, false, nodeName));
    }

    static DriveBackupArgs drive(String device, String target, String format, MirrorSyncMode sync,
                                 NewImageMode mode, Long speed) {
        return new DriveBackupArgs(null, device, target, format, sync, mode, speed, null, null, null, null, null,
                null, null, null, null);
    }

    static BlockdevBackupArgs blockdev(String device, String target, MirrorSyncMode sync, Long speed,
                                       BlockdevOnError onSource, BlockdevOnError onTarget) {
        return new BlockdevBackupArgs(null, device, target, sync, speed, null, null, null, onSource, onTarget,
                null, null, null, null);
    }

    @Override
    public void close() {
        jobs.cancelAll(10, TimeUnit.SECONDS);
        graph.closeAll();
    }
}
