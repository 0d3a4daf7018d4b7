package jblockd.client;

import java.util.ArrayDeque;
import java.util.Deque;
import java.util.LinkedHashMap;
import java.util.Map;

import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.MirrorSyncMode;

/**
 * Live storage migration over NBD as libvirt, Proxmox and Incus do it (reference/remote.md §5),
 * against any daemon that speaks QEMU 7.2's QMP, jblockd or QEMU, on either side: the
 * destination exports a writable node; the source adds an {@code nbd} node for that export and
 * runs {@code blockdev-mirror} into it; once READY the copy is handed over (cancel in sync: the
 * source keeps its disk and the destination holds the same data, QEMU's migration end) or the
 * source pivots onto the remote node (complete: the disk now lives on the other host).
 *
 * <p>{@link #start} does the steps up to the running mirror; the caller follows {@link #job()}
 * (to READY, then cancel or complete as {@link Options#finish} says, {@link #finishOnReady}) and
 * then calls {@link #close}, which undoes what is no longer needed on every path: the source's
 * nbd node unless the device now runs on it, and the destination export and NBD server this
 * migration made unless the source pivoted onto them.
 */
public final class Migration implements AutoCloseable {

    /** What happens at READY. */
    public enum Finish {
        /** block-job-cancel in sync: the destination holds the copy, the source keeps its disk. */
        HANDOVER,
        /** block-job-complete: the source device continues on the remote node. */
        PIVOT
    }

    /**
     * The destination side, when the migration is to make the export itself: {@code node} on the
     * daemon behind {@code qmp} is exported writable under the destination's export name (an NBD
     * server is started on the destination address if none runs), and removed again at the end
     * unless the source pivoted onto it.
     */
    public record Destination(QmpClient qmp, String node) {
    }

    /**
     * @param device      the source device (or node) to migrate
     * @param to          the destination export ({@link Endpoint#inet}, {@link Endpoint#unix})
     * @param jobId       the mirror's job id; null: {@code migrate-DEVICE}
     * @param sync        full (default when null) or top
     * @param speed       bytes/s, 0 or null unlimited
     * @param copyMode    {@code background} or {@code write-blocking}; null: the daemon's default
     * @param onSourceError the job's policy for a failing source read; null: the daemon's default
     * @param onTargetError the job's policy for a failing link; null: the daemon's default
     * @param tlsCreds    the id of client TLS credentials already on the source daemon; null: plain
     * @param tlsHostname the name the server certificate must carry; null: the server's host
     * @param finish      handover (default when null) or pivot
     * @param reconnectDelay seconds the source's nbd node waits for a dropped link to come back
     *                    before its requests fail into {@code onTargetError}; null: 0 (QEMU's default)
     */
    public record Options(String device, Endpoint to, String jobId, MirrorSyncMode sync, Long speed, String copyMode,
                          BlockdevOnError onSourceError, BlockdevOnError onTargetError, String tlsCreds, String tlsHostname, Finish finish, Long reconnectDelay) {
        public Options {
            if (device == null || to == null) {
                throw new IllegalArgumentException("a device and a destination are needed");
            }
            sync = sync == null ? MirrorSyncMode.FULL : sync;
            finish = finish == null ? Finish.HANDOVER : finish;
            jobId = jobId == null ? "migrate-" + device : jobId;
        }

        public static Options of(String device, Endpoint to) {
            return new Options(device, to, null, null, null, null, null, null, null, null, null, null);
        }

        public Options withFinish(Finish f) {
            return new Options(device, to, jobId, sync, speed, copyMode, onSourceError, onTargetError, tlsCreds,
                    tlsHostname, f, reconnectDelay);
        }

        public Options withTls(String creds, String hostname) {
            return new Options(device, to, jobId, sync, speed, copyMode, onSourceError, onTargetError, creds,
                    hostname, finish, reconnectDelay);
        }

        public Options withJob(String id, MirrorSyncMode s, Long bytesPerSecond, String mode, BlockdevOnError onSource,
                               BlockdevOnError onTarget) {
            return new Options(device, to, id, s, bytesPerSecond, mode, onSource, onTarget, tlsCreds, tlsHostname,
                    finish, reconnectDelay);
        }

        public Options withReconnectDelay(Long seconds) {
            return new Options(device, to, jobId, sync, speed, copyMode, onSourceError, onTargetError, tlsCreds,
                    tlsHostname, finish, seconds);
        }
    }

    /**
     * A destination export: where its NBD server listens and the export's name. {@code uri} is
     * what reports call it (the CLI passes the nbd driver's own rendering, e.g.
     * {@code nbd://10.0.0.2:10809/drive0}).
     */
    public record Endpoint(String type, String host, String port, String path, String export, String uri) {
        public static Endpoint inet(String host, String port, String export, String uri) {
            return new Endpoint("inet", host, port, null, export, uri);
        }

        public static Endpoint unix(String path, String export, String uri) {
            return new Endpoint("unix", null, null, path, export, uri);
        }

        /** The flat SocketAddress blockdev-add takes ({@code server} of BlockdevOptionsNbd). */
        Map<String, Object> flat() {
            return type.equals("inet") ? Map.of("type", "inet", "host", host, "port", port)
                    : Map.of("type", "unix", "path", path);
        }

        /** The SocketAddressLegacy nbd-server-start takes ({@code {type, data: {...}}}). */
        Map<String, Object> legacy() {
            return type.equals("inet") ? Map.of("type", "inet", "data", Map.of("host", host, "port", port))
                    : Map.of("type", "unix", "data", Map.of("path", path));
        }
    }

    private final QmpClient source;
    private final Options options;
    private final Endpoint endpoint;
    private final String targetNode;
    private final Deque<Runnable> sourceTeardown = new ArrayDeque<>();
    private final Deque<Runnable> destinationTeardown = new ArrayDeque<>();
    private Job job;
    private boolean pivoted;

    private Migration(QmpClient source, Options options) {
        this.source = source;
        this.options = options;
        this.endpoint = options.to();
        this.targetNode = options.jobId() + "-target";
    }

    /**
     * Makes the destination export (with {@code destination}), connects the source to it and
     * starts the mirror. On failure everything made so far is undone and the error thrown.
     */
    public static Migration start(QmpClient source, Destination destination, Options options) {
        Migration m = new Migration(source, options);
        try {
            if (destination != null) {
                m.export(destination);
            }
            m.connectSource();
            m.mirror();
            return m;
        } catch (RuntimeException e) {
            m.close();
            throw e;
        }
    }

    public Job job() {
        return job;
    }

    public Endpoint destination() {
        return endpoint;
    }

    public Options options() {
        return options;
    }

    /** The source's nbd node over the destination export (the mirror's target). */
    public String targetNode() {
        return targetNode;
    }

    /** Whether the source device now runs on the remote node (a completed pivot). */
    public boolean pivoted() {
        return pivoted;
    }

    /** At READY: hand over (cancel in sync) or pivot (complete), as the options say. */
    public void finishOnReady() {
        if (options.finish() == Finish.PIVOT) {
            job.complete();
        } else {
            job.cancel(false);
        }
    }

    /**
     * After the job ended with {@code result}: records whether the device pivoted (a completed
     * job in pivot mode), which decides what {@link #close} keeps.
     */
    public void ended(JobResult result) {
        pivoted = options.finish() == Finish.PIVOT && result.outcome() == JobResult.Outcome.COMPLETED;
    }

    /** Undoes what is no longer needed (see the class comment); never throws. */
    @Override
    public void close() {
        if (!pivoted) {
            runAll(sourceTeardown);
            runAll(destinationTeardown);
        }
    }

    private static void runAll(Deque<Runnable> steps) {
        while (!steps.isEmpty()) {
            try {
                steps.pop().run();
            } catch (RuntimeException ignored) {
                // best effort: the connection may be gone with the peer
            }
        }
    }

    private void export(Destination d) {
        String id = options.jobId();
        Map<String, Object> add = new LinkedHashMap<>();
        add.put("type", "nbd");
        add.put("id", id);
        add.put("node-name", d.node());
        add.put("name", endpoint.export());
        add.put("writable", true);
        try {
            d.qmp().execute("block-export-add", add);
        } catch (QmpException e) {
            if (!e.desc().equals("NBD server not running")) {
                throw e;
            }
            d.qmp().execute("nbd-server-start", Map.of("addr", endpoint.legacy()));
            destinationTeardown.push(() -> d.qmp().execute("nbd-server-stop", Map.of()));
            d.qmp().execute("block-export-add", add);
        }
        destinationTeardown.push(() -> d.qmp().execute("block-export-del", Map.of("id", id)));
    }

    private void connectSource() {
        Map<String, Object> add = new LinkedHashMap<>();
        add.put("driver", "nbd");
        add.put("node-name", targetNode);
        add.put("server", endpoint.flat());
        add.put("export", endpoint.export());
        if (options.tlsCreds() != null) {
            add.put("tls-creds", options.tlsCreds());
        }
        if (options.tlsHostname() != null) {
            add.put("tls-hostname", options.tlsHostname());
        }
        if (options.reconnectDelay() != null) {
            add.put("reconnect-delay", options.reconnectDelay());
        }
        source.block().blockdevAdd(add);
        sourceTeardown.push(() -> source.block().blockdevDel(targetNode));
    }

    private void mirror() {
        BlockdevMirror a = BlockdevMirror.of(options.device(), targetNode, options.sync()).jobId(options.jobId());
        if (options.speed() != null && options.speed() > 0) {
            a.speed(options.speed());
        }
        if (options.copyMode() != null) {
            a.set("copy-mode", options.copyMode());
        }
        if (options.onSourceError() != null) {
            a.onSourceError(options.onSourceError());
        }
        if (options.onTargetError() != null) {
            a.onTargetError(options.onTargetError());
        }
        job = source.jobs().blockdevMirror(a);
    }

}
