package jblockd.cli;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;

import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;

import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.BlockdevRef;
import jblockd.block.DriverRegistry;
import jblockd.block.ImageCreator;
import jblockd.block.NodeGraph;
import jblockd.client.NodeLookup;
import jblockd.client.PullBackup;
import jblockd.client.QmpClient;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.ParentCommand;

/**
 * {@code jblockctl pull DEVICE TARGET}: a pull-mode backup ({@link PullBackup}) into the local
 * qcow2 TARGET, which jblockctl writes itself; with {@code --bitmap CHK --previous PREV} TARGET is
 * a new qcow2 over PREV holding only what changed since checkpoint CHK, so PREV's chain plus
 * TARGET is the disk at the fleecing point.
 */
@Command(name = "pull", sortOptions = false,
        header = "Pull-mode backup of DEVICE over NBD into the new qcow2 TARGET (fleecing + dirty-bitmap export).",
        description = "Freezes DEVICE's point in time in a scratch image on the daemon's host (classic fleecing),"
                + " exports it over NBD with a copy of --bitmap, and reads only the extents it calls dirty (all"
                + " allocated data without --bitmap). Works against jblockd and qemu-storage-daemon alike.")
final class PullCommand implements Callable<Integer> {
    @ParentCommand
    JblockCtl top;

    @Parameters(index = "0", paramLabel = "DEVICE", description = "Device or node name")
    String device;

    @Parameters(index = "1", paramLabel = "TARGET", description = "The qcow2 file to create (must not exist)")
    Path target;

    @Option(names = "--bitmap", paramLabel = "CHK", description = "Pull only what changed since checkpoint bitmap CHK")
    String bitmap;

    @Option(names = "--previous", paramLabel = "PREV",
            description = "With --bitmap: TARGET is a qcow2 overlay over PREV (the previous backup of the chain)")
    Path previous;

    @Option(names = "--checkpoint", paramLabel = "NEW",
            description = "Add the persistent bitmap NEW at the fleecing point (the next pull's --bitmap)")
    String checkpoint;

    @Option(names = "--scratch", paramLabel = "PATH",
            description = "The scratch qcow2 the daemon creates and removes from the graph after (default: a new"
                    + " file in the temporary directory, deleted after)")
    Path scratch;

    @Option(names = "--nbd-socket", paramLabel = "PATH",
            description = "The daemon's running NBD server (default: start one for this pull and stop it after)")
    Path nbdSocket;

    @Override
    public Integer call() throws Exception {
        if (previous != null && bitmap == null) {
            throw new CliException("--previous needs --bitmap (an overlay holds only what changed)", 2);
        }
        if (Files.exists(target)) {
            throw new CliException("'" + target + "' exists; pull creates TARGET", 2);
        }
        if (previous != null && !Files.isRegularFile(previous)) {
            throw new CliException("'" + previous + "' is not a file", 2);
        }
        boolean ownScratch = scratch == null;
        Path scratchFile = ownScratch
                ? Path.of(System.getProperty("java.io.tmpdir"), "jblockd-pull-" + ProcessHandle.current().pid()
                        + "-" + System.nanoTime() + ".qcow2")
                : scratch;
        if (Files.exists(scratchFile)) {
            throw new CliException("scratch '" + scratchFile + "' exists; it would be overwritten", 2);
        }
        NodeGraph graph = new NodeGraph(DriverRegistry.standard());
        try (QmpClient qmp = top.connect()) {
            long size = NodeLookup.resolve(qmp, device).size();
            ImageCreator qcow2 = graph.drivers().creator("qcow2").orElseThrow();
            qcow2.create(new ImageCreator.Options(target, size,
                    previous == null ? null : previous.toAbsolutePath().toString(), previous == null ? null : "qcow2",
                    0, false));
            BlockdevOptions.Common c = BlockdevOptions.Common.defaults();
            BlockNode out = graph.add(new BlockdevOptions.Qcow2(c.withNodeName("target"),
                    new BlockdevRef.Inline(new BlockdevOptions.File(c.withNodeName("target-file"), target.toString())),
                    null));
            PullBackup.Sink sink = new PullBackup.Sink() {
                public void write(long offset, ByteBuffer data) throws java.io.IOException {
                    out.write(offset, data, false);
                }

                public void zero(long offset, long length) throws java.io.IOException {
                    out.writeZeroes(offset, length, false);
                }
            };
            PullBackup.Result r = PullBackup.run(qmp, new PullBackup.Options(device, bitmap, checkpoint,
                    scratchFile.toAbsolutePath(), nbdSocket, "jblockctl-pull"), sink, bytes -> { });
            out.flush();
            List<String> chain = ImageChain.of(out);
            if (top.json) {
                ObjectNode o = JsonNodeFactory.instance.objectNode().put("kind", "pulled").put("size", r.size())
                        .put("dirty", r.dirtyBytes()).put("data", r.dataBytes()).put("zero", r.zeroBytes());
                chain.forEach(o.putArray("chain")::add);
                top.out.println(o);
            } else {
                top.out.printf("%s: pulled %s of %s (%s read, %s zero)%n", device, Sizes.format(r.dirtyBytes()),
                        Sizes.format(r.size()), Sizes.format(r.dataBytes()), Sizes.format(r.zeroBytes()));
                top.out.println("chain: " + String.join(" -> ", chain));
            }
            return 0;
        } catch (Exception e) {
            graph.closeAll(); // before the file goes: a partial backup must not look like one
            Files.deleteIfExists(target);
            throw e;
        } finally {
            graph.closeAll(); // no-op after the catch
            if (ownScratch) {
                Files.deleteIfExists(scratchFile);
            }
        }
    }
}
