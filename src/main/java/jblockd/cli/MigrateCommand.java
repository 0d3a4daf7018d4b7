package jblockd.cli;

import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.atomic.AtomicBoolean;

import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;

import jblockd.block.BlockdevOptions;
import jblockd.block.IoError;
import jblockd.block.nbd.NbdFilenames;
import jblockd.client.JobResult;
import jblockd.client.Migration;
import jblockd.client.QmpClient;
import jblockd.client.QmpConnectionException;
import jblockd.qapi.MirrorSyncMode;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.ParentCommand;

/**
 * {@code jblockctl migrate DEVICE --to HOST:PORT[/EXPORT]}: live storage migration over NBD
 * ({@link Migration}), followed to its end: mirror to the destination's export, wait for READY,
 * then hand over (default) or pivot, and report.
 */
@Command(name = "migrate", sortOptions = false,
        header = "Move DEVICE's data to another host's NBD export while the guest keeps writing.",
        description = {"Mirrors DEVICE into the writable NBD export at --to and waits until it is in sync. Then, by"
                + " default, hands over: the mirror is cancelled in sync, so the destination holds the disk as it"
                + " was at that moment and the source keeps its own (stop the guest's writes first, as a VM"
                + " migration does at switch-over). With --pivot the device continues on the remote export instead.",
                "With --dest-socket the destination daemon (jblockd or qemu-storage-daemon) is asked to export"
                        + " --dest-node itself (and to start its NBD server on the --to address if none runs);"
                        + " without it the export must exist."})
final class MigrateCommand implements Callable<Integer> {
    @ParentCommand
    JblockCtl top;

    @Parameters(index = "0", paramLabel = "DEVICE")
    String device;

    @Option(names = "--to", required = true, paramLabel = "HOST:PORT[/EXPORT]",
            description = "The destination export (default name: DEVICE); NBD URIs (nbd://, nbd+unix://) too")
    String to;

    @Option(names = "--pivot", description = "At READY, switch DEVICE to the remote export (block-job-complete)")
    boolean pivot;

    @Option(names = "--dest-socket", paramLabel = "PATH|tcp:HOST:PORT",
            description = "QMP socket of the destination daemon: make the export there")
    String destSocket;

    @Option(names = "--dest-node", paramLabel = "NODE", description = "With --dest-socket: the node to export")
    String destNode;

    @Option(names = "--tls-creds", paramLabel = "ID",
            description = "Client TLS credentials on the source daemon (object-add tls-creds-x509 endpoint=client)")
    String tlsCreds;

    @Option(names = "--tls-hostname", paramLabel = "NAME",
            description = "Host name the destination's certificate must carry (default: the --to host)")
    String tlsHostname;

    @Option(names = "--job-id", paramLabel = "ID", description = "Job id (default: migrate-DEVICE)")
    String jobId;

    @Option(names = "--sync", paramLabel = "MODE", converter = Converters.SyncMode.class,
            description = "full (default) or top (the destination already has the backing chain)")
    MirrorSyncMode sync;

    @Option(names = "--speed", paramLabel = "SPEED", converter = Converters.Size.class,
            description = "Rate limit in bytes/s (0 = unlimited)")
    Long speed;

    @Option(names = "--copy-mode", paramLabel = "MODE",
            description = "background (default) or write-blocking (guest writes reach the destination before they"
                    + " complete, so the mirror converges under any write rate)")
    String copyMode;

    @Option(names = "--reconnect-delay", paramLabel = "SECONDS",
            description = "How long a dropped link may stay down before the mirror's writes fail into"
                    + " --on-target-error (default 0: at once)")
    Long reconnectDelay;

    @Mixin
    CopyErrorOptions errors = new CopyErrorOptions();

    @Override
    public Integer call() throws Exception {
        if ((destSocket == null) != (destNode == null)) {
            throw new CliException("--dest-socket and --dest-node go together", 2);
        }
        if (copyMode != null && !List.of("background", "write-blocking").contains(copyMode)) {
            throw new CliException("--copy-mode is background or write-blocking, not '" + copyMode + "'", 2);
        }
        Migration.Endpoint where = endpoint(to, device);
        Migration.Options o = Migration.Options.of(device, where)
                .withJob(jobId, sync, speed, copyMode, errors.onSourceError, errors.onTargetError)
                .withTls(tlsCreds, tlsHostname)
                .withReconnectDelay(reconnectDelay)
                .withFinish(pivot ? Migration.Finish.PIVOT : Migration.Finish.HANDOVER);
        try (QmpClient source = top.connect();
             QmpClient dest = destSocket == null ? null : connectDestination()) {
            long started = System.nanoTime();
            int rc;
            JobResult result;
            try (Migration m = Migration.start(source, dest == null ? null : new Migration.Destination(dest, destNode), o)) {
                AtomicBoolean finishing = new AtomicBoolean();
                m.job().onProgress(p -> {
                    if (p.ready() && !p.finished() && finishing.compareAndSet(false, true)) {
                        m.finishOnReady();
                    }
                });
                rc = JobWaiter.await(List.of(m.job()), top.progressView(), JobWaiter.OnReady.CALLER_FINISHES, false);
                result = m.job().completion().getNow(null);
                if (result != null) {
                    m.ended(result);
                }
                report(m, rc, System.nanoTime() - started);
            }
            return rc;
        }
    }

    /**
     * {@code --to} as the nbd driver parses a filename (one parser for both): an NBD URI, or the
     * shorthand {@code HOST:PORT[/EXPORT]} for {@code nbd://HOST:PORT/EXPORT}; the export
     * defaults to the device's name. A bad one is a usage error, before anything connects.
     */
    static Migration.Endpoint endpoint(String to, String device) {
        String filename = to.startsWith("nbd:") || to.startsWith("nbd+") ? to : "nbd://" + to;
        BlockdevOptions.Nbd nbd;
        try {
            nbd = NbdFilenames.parse(filename, BlockdevOptions.Common.defaults());
        } catch (IoError e) {
            throw new CliException("'" + to + "' is not HOST:PORT[/EXPORT] or an NBD URI: " + e.getMessage(), 2);
        }
        String export = nbd.export() == null ? device : nbd.export();
        String uri = NbdFilenames.filename(nbd.server(), export);
        return switch (nbd.server()) {
            case BlockdevOptions.NbdServer.Inet i -> Migration.Endpoint.inet(i.host(), i.port(), export, uri);
            case BlockdevOptions.NbdServer.Unix u -> Migration.Endpoint.unix(u.path(), export, uri);
        };
    }

    private QmpClient connectDestination() {
        try {
            return QmpClient.connect(destSocket);
        } catch (java.io.IOException | IllegalArgumentException e) {
            throw new CliException("cannot connect to " + destSocket + ": " + JblockCtl.message(e), 2);
        } catch (QmpConnectionException e) {
            throw new CliException("cannot talk QMP to " + destSocket + ": " + e.getMessage(), 2);
        }
    }

    private void report(Migration m, int rc, long nanos) {
        String uri = m.destination().uri();
        String outcome = rc != 0 ? "failed" : m.pivoted() ? "pivoted" : "handed-over";
        if (top.json) {
            ObjectNode j = JsonNodeFactory.instance.objectNode().put("kind", "migrated").put("device", device)
                    .put("destination", uri).put("outcome", outcome).put("seconds", nanos / 1e9);
            top.out.println(j);
            return;
        }
        switch (outcome) {
            case "pivoted" -> top.out.printf("%s: now runs on %s (node %s)%n", device, uri, m.targetNode());
            case "handed-over" -> top.out.printf("%s: %s holds the disk as of the hand-over; the source keeps"
                    + " its own (%.1f s)%n", device, uri, nanos / 1e9);
            default -> top.out.printf("%s: migration to %s failed; the source is unchanged and the mirror"
                    + " connection is removed%n", device, uri);
        }
    }
}
