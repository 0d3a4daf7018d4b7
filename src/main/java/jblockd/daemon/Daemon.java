package jblockd.daemon;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.InstantSource;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.CacheMode;
import jblockd.block.DriverRegistry;
import jblockd.block.NodeGraph;
import jblockd.commands.BackupCommands;
import jblockd.commands.BitmapCommands;
import jblockd.commands.BlockdevCommands;
import jblockd.commands.JobCommands;
import jblockd.commands.BlockdevOptionsCodec;
import jblockd.commands.ControlCommands;
import jblockd.commands.MirrorCommands;
import jblockd.commands.NbdCommands;
import jblockd.commands.ObjectCommands;
import jblockd.commands.RunStateCommands;
import jblockd.commands.StreamCommitCommands;
import jblockd.commands.TransactionCommands;
import jblockd.device.Device;
import jblockd.device.Devices;
import jblockd.device.RunState;
import jblockd.job.JobRegistry;
import jblockd.nbd.server.NbdServer;
import jblockd.object.ObjectRegistry;
import jblockd.qapi.IoStatus;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.QmpError;
import jblockd.qmp.CommandContext;
import jblockd.qmp.CommandRegistry;
import jblockd.qmp.EventFanout;
import jblockd.qmp.QapiSchema;
import jblockd.qmp.QmpAddress;
import jblockd.qmp.QmpDispatcher;
import jblockd.qmp.QmpJson;
import jblockd.qmp.QmpServer;

/**
 * The composition root: the only place that builds and wires jblockd's parts (STYLE.md §3.6).
 * A daemon owns its node graph, devices, event fan-out, command registry and QMP servers; there
 * is no static state, so tests and embedders may run several in one JVM.
 * <pre>
 *   try (Daemon d = Daemon.builder().drive("id=drive0,file=disk.qcow2,format=qcow2").build()) {
 *       d.start();
 *       JsonNode r = d.executeCommand("query-block", null);
 *   }
 * </pre>
 * {@link #start()} applies the options in command-line order (QMP sockets are bound last, after
 * every image opened, so a client that can connect finds the daemon complete) and undoes
 * everything when one fails. {@link #close()} (also reached by QMP {@code quit} and SIGTERM)
 * runs the registered shutdown steps in reverse order, closes the QMP servers, flushes and closes
 * every node and removes the pidfile. Thread-safe.
 */
public final class Daemon implements AutoCloseable {

    /** A start-up failure: which option, and why (Main prints {@code jblockd: OPTION: reason}). */
    public static final class StartupException extends Exception {
        private static final long serialVersionUID = 1L;
        private final String option;

        public StartupException(String option, String reason) {
            super(reason);
            this.option = option;
        }

        /** {@code --drive id=x,...} as given, or null when no single option is to blame. */
        public String option() {
            return option;
        }

        /** The one line Main prints. */
        public String line() {
            return "jblockd: " + (option == null ? "" : option + ": ") + getMessage();
        }
    }

    /** One command-line option, kept in order. */
    public record Option(String name, String value) {
        @Override
        public String toString() {
            return "--" + name + " " + value;
        }
    }

    private final List<Option> options;
    private final Path pidfile;
    private final QmpJson json = new QmpJson();
    private final QapiSchema schema;
    private final CommandRegistry registry = new CommandRegistry();
    private final QmpDispatcher dispatcher;
    private final NodeGraph graph;
    private final Devices devices;
    private final EventFanout events;
    private final BlockdevCommands blockdevCommands;
    private final JobRegistry jobs;
    /** Guest I/O gate (stop/cont, io-error); jobs do not pass it. */
    private final RunState runState;
    private final NbdServer nbdServer = new NbdServer();
    /** object-add / --object objects (secrets, TLS credentials). */
    private final ObjectRegistry objects = new ObjectRegistry();
    private final List<QmpServer> qmpServers = new CopyOnWriteArrayList<>();
    private final List<Runnable> shutdownSteps = new CopyOnWriteArrayList<>();
    private final AtomicBoolean started = new AtomicBoolean();
    private final AtomicBoolean closing = new AtomicBoolean();
    private final CountDownLatch terminated = new CountDownLatch(1);
    private boolean pidfileWritten;

    private Daemon(List<Option> options, Path pidfile) {
        this.options = List.copyOf(options);
        this.pidfile = pidfile;
        this.schema = QapiSchema.load(json);
        this.dispatcher = new QmpDispatcher(schema, registry, json);
        this.graph = new NodeGraph(DriverRegistry.standard(),
                new jblockd.commands.JsonFilenameOptions(new jblockd.qmp.QapiValidator(schema)));
        this.devices = new Devices(graph);
        this.events = new EventFanout(json, InstantSource.system());
        this.blockdevCommands = new BlockdevCommands(graph, devices);
        // cont resets every drive's io-status (QEMU's bdrv_iostatus_reset_all)
        this.runState = new RunState(events, () -> devices.all().forEach(d -> d.setIoStatus(IoStatus.OK)));

        // Command groups, one per schema file. Other groups register here too.
        new ControlCommands(schema, registry, events, this::shutdownAsync,
                Version.QEMU_MAJOR, Version.QEMU_MINOR, Version.QEMU_MICRO, Version.packageString())
                .register(registry);
        blockdevCommands.register(registry);
        new jblockd.commands.StatsCommands(graph, devices).register(registry);
        new jblockd.commands.ResizeCommands(graph, devices, events).register(registry);
        BitmapCommands bitmapCommands = new BitmapCommands(devices);
        bitmapCommands.register(registry);
        this.jobs = new JobRegistry(events, graph);
        new JobCommands(jobs).register(registry);
        BackupCommands backups = new BackupCommands(graph, devices, jobs);
        backups.register(registry);
        TransactionCommands transactions = new TransactionCommands(devices, json);
        backups.registerActions(transactions);
        bitmapCommands.registerActions(transactions);
        jblockd.commands.ReopenCommands reopen = new jblockd.commands.ReopenCommands(graph, devices);
        reopen.register(registry);
        jblockd.commands.SnapshotCommands snapshots = new jblockd.commands.SnapshotCommands(graph, devices, reopen);
        snapshots.register(registry);
        snapshots.registerActions(transactions);
        jblockd.commands.InternalSnapshotCommands internalSnapshots =
                new jblockd.commands.InternalSnapshotCommands(graph, devices);
        internalSnapshots.register(registry);
        internalSnapshots.registerActions(transactions);
        transactions.register(registry);
        new MirrorCommands(graph, devices, jobs).register(registry);
        new StreamCommitCommands(graph, devices, jobs).register(registry);
        new jblockd.commands.CreateCommands(graph, jobs).register(registry);
        // quit / SIGTERM: running jobs are cancelled (a cancelled backup's target is simply
        // incomplete) and concluded ones dismissed, before the nodes are flushed and closed.
        addShutdownStep(() -> jobs.cancelAll(30, TimeUnit.SECONDS));
        new RunStateCommands(runState).register(registry);
        new ObjectCommands(objects).register(registry);
        // nodes' objects: remote nodes' tls-creds (client credentials, held while in use), rbd key-secret
        graph.setObjectLookup(new jblockd.block.ObjectLookup() {
            public jblockd.tls.X509Credentials retainClient(String id) throws jblockd.block.IoError {
                try {
                    return objects.retainTlsCreds(id, jblockd.tls.X509Credentials.Endpoint.CLIENT);
                } catch (jblockd.qapi.QmpError e) {
                    throw new jblockd.block.IoError(jblockd.block.Errno.EINVAL, e.getMessage());
                }
            }

            public void release(String id) {
                objects.release(id);
            }

            public byte[] secret(String id) throws jblockd.block.IoError {
                try {
                    return objects.secret(id).bytes();
                } catch (jblockd.qapi.QmpError e) {
                    throw new jblockd.block.IoError(jblockd.block.Errno.EINVAL, e.getMessage());
                }
            }
        });
        new NbdCommands(nbdServer, devices, graph, runState, events, objects).register(registry);
        // NBD clients go before the jobs are cancelled and the nodes close
        addShutdownStep(nbdServer::stop);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Collects options in order; every method may be called repeatedly. */
    public static final class Builder {
        private final List<Option> options = new ArrayList<>();
        private Path pidfile;

        /** {@code unix:PATH} or {@code tcp:HOST:PORT}. */
        public Builder qmp(String spec) {
            return option("qmp", spec);
        }

        public Builder chardev(String keyval) {
            return option("chardev", keyval);
        }

        public Builder monitor(String keyval) {
            return option("monitor", keyval);
        }

        public Builder drive(String keyval) {
            return option("drive", keyval);
        }

        /** Keyval or JSON, exactly as blockdev-add takes it. */
        public Builder blockdev(String keyvalOrJson) {
            return option("blockdev", keyvalOrJson);
        }

        public Builder nbdServer(String keyvalOrJson) {
            return option("nbd-server", keyvalOrJson);
        }

        /** Keyval ({@code TYPE,id=ID,...}) or JSON, exactly as object-add takes it. */
        public Builder object(String keyvalOrJson) {
            return option("object", keyvalOrJson);
        }

        public Builder export(String keyvalOrJson) {
            return option("export", keyvalOrJson);
        }

        public Builder pidfile(Path path) {
            this.pidfile = path;
            return this;
        }

        public Builder option(String name, String value) {
            options.add(new Option(name, value));
            return this;
        }

        public Daemon build() {
            return new Daemon(options, pidfile);
        }
    }

    // ---- accessors for embedders, tests and the command groups wired here ----

    public NodeGraph graph() {
        return graph;
    }

    public Devices devices() {
        return devices;
    }

    public JobRegistry jobs() {
        return jobs;
    }

    public EventFanout events() {
        return events;
    }

    public CommandRegistry registry() {
        return registry;
    }

    public QapiSchema schema() {
        return schema;
    }

    public QmpDispatcher dispatcher() {
        return dispatcher;
    }

    public QmpJson json() {
        return json;
    }

    public RunState runState() {
        return runState;
    }

    public ObjectRegistry objects() {
        return objects;
    }

    public NbdServer nbdServer() {
        return nbdServer;
    }

    public List<QmpServer> qmpServers() {
        return Collections.unmodifiableList(qmpServers);
    }

    /** Runs at shutdown (before QMP servers and nodes close), last added first. */
    public void addShutdownStep(Runnable step) {
        shutdownSteps.add(step);
    }

    /**
     * Executes a QMP command in-process, with the same validation as over a socket.
     * {@code args} null means none.
     */
    public JsonNode executeCommand(String name, JsonNode args) throws QmpError {
        CommandContext ctx = CommandContext.detached();
        JsonNode r = dispatcher.execute(name, args, false, ctx);
        ctx.runAfterReply();
        return r;
    }

    // ---- start-up ----

    /** Applies every option; on failure undoes all and throws. */
    public void start() throws StartupException {
        if (!started.compareAndSet(false, true)) {
            throw new IllegalStateException("already started");
        }
        Map<String, QmpAddress> chardevs = new LinkedHashMap<>();
        List<Map.Entry<Option, QmpAddress>> monitors = new ArrayList<>();
        Option current = null;
        try {
            if (pidfile != null) {
                writePidfile();
            }
            for (Option o : options) {
                current = o;
                switch (o.name()) {
                    case "qmp" -> monitors.add(Map.entry(o, parseQmp(o.value())));
                    case "chardev" -> chardev(o.value(), chardevs);
                    case "monitor" -> monitors.add(Map.entry(o, monitor(o.value(), chardevs)));
                    case "drive" -> drive(o.value());
                    case "blockdev" -> runOptionCommand("blockdev-add", o.value(), null);
                    case "nbd-server" -> runOptionCommand("nbd-server-start", o.value(), null);
                    case "export" -> runOptionCommand("block-export-add", o.value(), "type");
                    case "object" -> runOptionCommand("object-add", o.value(), "qom-type");
                    default -> throw new StartupException(null, "unknown option --" + o.name());
                }
            }
            for (Map.Entry<Option, QmpAddress> m : monitors) {
                current = m.getKey();
                QmpServer s = new QmpServer(m.getValue(), dispatcher, events, Version.packageString(),
                        Version.QEMU_MAJOR, Version.QEMU_MINOR, Version.QEMU_MICRO);
                s.start();
                qmpServers.add(s);
                System.err.println("jblockd: QMP server listening on " + listening(s));
            }
        } catch (StartupException e) {
            close();
            throw e.option() == null && current != null ? new StartupException(current.toString(), e.getMessage()) : e;
        } catch (QmpError e) {
            close();
            throw new StartupException(current == null ? null : current.toString(), e.desc());
        } catch (IOException | RuntimeException e) {
            close();
            throw new StartupException(current == null ? null : current.toString(),
                    e.getMessage() != null ? e.getMessage() : e.toString());
        }
    }

    private static String listening(QmpServer s) {
        return switch (s.address()) {
            case QmpAddress.Unix u -> "unix:" + u.path();
            case QmpAddress.Tcp t -> "tcp:" + t.host() + ":" + s.port();
        };
    }

    private static QmpAddress parseQmp(String spec) throws StartupException {
        try {
            return QmpAddress.parse(spec);
        } catch (IllegalArgumentException e) {
            throw new StartupException(null, e.getMessage());
        }
    }

    /** qemu-storage-daemon's {@code --chardev socket,id=ID,path=P,server=on,wait=off}. */
    private void chardev(String value, Map<String, QmpAddress> chardevs) throws StartupException {
        ObjectNode kv = keyval(value, "backend");
        String backend = kv.path("backend").asText("");
        if (!backend.equals("socket")) {
            throw new StartupException(null, "chardev backend '" + backend + "' is not supported (only socket)");
        }
        String id = text(kv, "id");
        if (id == null) {
            throw new StartupException(null, "Parameter 'id' is missing");
        }
        if (chardevs.containsKey(id)) {
            throw new StartupException(null, "attempt to add duplicate property '" + id + "' to object");
        }
        for (String k : List.of("server", "wait")) {
            String v = text(kv, k);
            if (v != null && !List.of("on", "off", "true", "false", "yes", "no").contains(v)) {
                throw new StartupException(null, "Parameter '" + k + "' expects 'on' or 'off'");
            }
        }
        String server = text(kv, "server");
        if (server == null || !(server.equals("on") || server.equals("true") || server.equals("yes"))) {
            throw new StartupException(null, "only server=on sockets are supported");
        }
        String path = text(kv, "path");
        String host = text(kv, "host");
        String port = text(kv, "port");
        for (String k : (Iterable<String>) kv::fieldNames) {
            if (!List.of("backend", "id", "path", "host", "port", "server", "wait", "ipv4", "ipv6").contains(k)) {
                throw new StartupException(null, "Invalid parameter '" + k + "'");
            }
        }
        if (path != null) {
            chardevs.put(id, new QmpAddress.Unix(Path.of(path)));
        } else if (port != null) {
            try {
                chardevs.put(id, new QmpAddress.Tcp(host == null ? "127.0.0.1" : host, Integer.parseInt(port)));
            } catch (NumberFormatException e) {
                throw new StartupException(null, "Parameter 'port' expects a port number");
            }
        } else {
            throw new StartupException(null, "chardev: socket: no host given");
        }
    }

    /** {@code --monitor [chardev=]ID[,mode=control]}. */
    private QmpAddress monitor(String value, Map<String, QmpAddress> chardevs) throws StartupException {
        ObjectNode kv = keyval(value, "chardev");
        for (String k : (Iterable<String>) kv::fieldNames) {
            if (!List.of("chardev", "mode", "pretty", "id").contains(k)) {
                throw new StartupException(null, "Invalid parameter '" + k + "'");
            }
        }
        String mode = text(kv, "mode");
        if (mode != null && !mode.equals("control")) {
            throw new StartupException(null, "Parameter 'mode' does not accept value '" + mode + "'");
        }
        String id = text(kv, "chardev");
        if (id == null) {
            throw new StartupException(null, "Parameter 'chardev' is missing");
        }
        QmpAddress a = chardevs.get(id);
        if (a == null) {
            throw new StartupException(null, "chardev \"" + id + "\" not found");
        }
        return a;
    }

    /**
     * {@code --drive id=NAME,file=PATH[,format=][,rerror=][,werror=][,read-only=][,cache=][,discard=][,node-name=]}
     * (QEMU blockdev.c drive_new / blockdev_init for if=none).
     */
    private void drive(String value) throws StartupException, QmpError, IOException {
        ObjectNode kv = keyval(value, null);
        for (String k : (Iterable<String>) kv::fieldNames) {
            if (!List.of("id", "file", "format", "if", "node-name", "read-only", "cache", "rerror", "werror",
                    "discard")
                    .contains(k)) {
                throw new StartupException(null, "Invalid parameter '" + k + "'");
            }
            if (kv.get(k).isObject()) {
                throw new StartupException(null, "Invalid parameter '" + k + "'");
            }
        }
        String iface = text(kv, "if");
        if (iface != null && !iface.equals("none")) {
            throw new StartupException(null, "unsupported bus type '" + iface + "' (only if=none)");
        }
        String id = text(kv, "id");
        if (id == null) {
            throw new StartupException(null, "Parameter 'id' is missing");
        }
        if (!BlockdevOptionsCodec.wellFormed(id)) {
            throw new StartupException(null, "Parameter 'id' expects an identifier");
        }
        if (devices.get(id).isPresent()) {
            throw new StartupException(null, "Duplicate ID '" + id + "' for drive");
        }
        BlockdevOnError rerror = errorAction(text(kv, "rerror"), BlockdevOnError.REPORT, true);
        BlockdevOnError werror = errorAction(text(kv, "werror"), BlockdevOnError.ENOSPC, false);
        String file = text(kv, "file");
        if (file == null || file.isEmpty()) {
            throw new StartupException(null, "Parameter 'file' is missing (drives without medium are not supported)");
        }
        String format = text(kv, "format");
        if (format != null && !format.equals("raw") && !format.equals("qcow2")) {
            throw new StartupException(null, "'" + format + "' invalid format");
        }
        boolean readOnly = bool(kv, "read-only");
        String cache = text(kv, "cache");
        CacheMode cacheMode = cache == null ? CacheMode.WRITEBACK : CacheMode.parse(cache)
                .orElseThrow(() -> new StartupException(null, "invalid cache option"));
        String discard = text(kv, "discard");
        // block.c bdrv_parse_discard_flags(): ignore is QEMU's default
        boolean unmap = switch (discard == null ? "ignore" : discard) {
            case "ignore", "off" -> false;
            case "unmap", "on" -> true;
            default -> throw new StartupException(null, "Invalid discard option");
        };
        String nodeName = text(kv, "node-name");
        if (nodeName != null) {
            BlockdevOptionsCodec.checkNodeName(nodeName);
        }
        BlockdevOptions opts = graph.imageOptions(file, format, readOnly, cacheMode.direct(),
                cacheMode.noFlush(), nodeName, unmap);
        BlockNode root = blockdevCommands.openNode(opts);
        try {
            devices.add(new Device(id, root, rerror, werror, cacheMode.writeback()));
        } catch (IllegalArgumentException e) {
            graph.remove(root);
            throw new StartupException(null, e.getMessage());
        }
    }

    /** blockdev.c parse_block_error_action(): enospc is not a read error action; auto is neither. */
    private static BlockdevOnError errorAction(String v, BlockdevOnError dflt, boolean read) throws StartupException {
        if (v == null) {
            return dflt;
        }
        BlockdevOnError a = BlockdevOnError.fromWire(v);
        if (a == null || a == BlockdevOnError.AUTO || (read && a == BlockdevOnError.ENOSPC)) {
            throw new StartupException(null, "'" + v + "' invalid " + (read ? "read" : "write") + " error action");
        }
        return a;
    }

    /**
     * Runs the QMP command behind an option ({@code --blockdev} is blockdev-add, ...), with the
     * same schema validation; keyval values are typed by the schema, JSON is taken as is.
     */
    private void runOptionCommand(String command, String value, String impliedKey)
            throws StartupException, QmpError {
        if (!dispatcher.available(command)) {
            throw new StartupException(null, "command '" + command + "' is not available in this build");
        }
        JsonNode args;
        boolean keyval;
        if (value.stripLeading().startsWith("{")) {
            try {
                args = json.mapper().readTree(value);
            } catch (IOException e) {
                throw new StartupException(null, "invalid JSON: " + e.getMessage());
            }
            keyval = false;
        } else {
            args = keyval(value, impliedKey);
            keyval = true;
        }
        if (command.equals("nbd-server-start")) {
            args = NbdAddressCompat.toLegacy(args);
        }
        CommandContext ctx = CommandContext.detached();
        dispatcher.execute(command, args, keyval, ctx);
        ctx.runAfterReply();
    }

    private static ObjectNode keyval(String value, String implied) throws StartupException {
        try {
            return KeyvalParser.parse(value, implied);
        } catch (KeyvalParser.KeyvalException e) {
            throw new StartupException(null, e.getMessage());
        }
    }

    private static String text(ObjectNode kv, String key) {
        JsonNode v = kv.get(key);
        return v == null || !v.isTextual() ? null : v.asText();
    }

    private static boolean bool(ObjectNode kv, String key) throws StartupException {
        String v = text(kv, key);
        if (v == null) {
            return false;
        }
        return switch (v) {
            case "on", "yes", "true", "y" -> true;
            case "off", "no", "false", "n" -> false;
            default -> throw new StartupException(null, "Parameter '" + key + "' expects 'on' or 'off'");
        };
    }

    private void writePidfile() throws IOException {
        Path tmp = pidfile.resolveSibling(pidfile.getFileName() + ".tmp" + ProcessHandle.current().pid());
        Files.writeString(tmp, ProcessHandle.current().pid() + "\n", StandardCharsets.US_ASCII);
        Files.move(tmp, pidfile, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        pidfileWritten = true;
    }

    // ---- shutdown ----

    /** Shuts down on a new thread (quit's after-reply action, signals). */
    public void shutdownAsync() {
        Thread.ofPlatform().name("jblockd-shutdown").start(this::close);
    }

    /** Emits SHUTDOWN (host-signal) and shuts down; for SIGTERM/SIGINT. */
    public void shutdownOnSignal() {
        if (!closing.get()) {
            events.shutdown(false, "host-signal");
        }
        shutdownAsync();
    }

    /** Blocks until {@link #close()} has finished. */
    public void awaitTermination() throws InterruptedException {
        terminated.await();
    }

    public boolean awaitTermination(long timeout, TimeUnit unit) throws InterruptedException {
        return terminated.await(timeout, unit);
    }

    public boolean isClosed() {
        return terminated.getCount() == 0;
    }

    /**
     * Stops everything: shutdown steps (last added first), then the QMP servers (queued replies and
     * events are flushed first), then every node is flushed and closed; the pidfile is removed. Idempotent;
     * a second caller waits for the first to finish.
     */
    @Override
    public void close() {
        if (!closing.compareAndSet(false, true)) {
            try {
                terminated.await(30, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            return;
        }
        try {
            // The steps (NBD clients out, jobs cancelled) run while the QMP servers are still
            // up, so connected clients get each job's BLOCK_JOB_CANCELLED after SHUTDOWN, as in
            // QEMU's qemu_cleanup() (job_cancel_sync_all() before monitor_cleanup()). Closing
            // QMP first lost those events.
            List<Runnable> steps = new ArrayList<>(shutdownSteps);
            Collections.reverse(steps);
            for (Runnable r : steps) {
                try {
                    r.run();
                } catch (RuntimeException e) {
                    System.err.println("jblockd: shutdown step failed: " + e);
                }
            }
            for (QmpServer s : qmpServers) {
                s.close();
            }
            // A job a client started while the steps ran (QMP was still up) must not run on
            // over nodes that are about to close.
            jobs.cancelAll(30, TimeUnit.SECONDS);
            for (Device d : devices.all()) {
                devices.remove(d.name());
            }
            graph.closeAll();
            if (pidfileWritten) {
                try {
                    Files.deleteIfExists(pidfile);
                } catch (IOException e) {
                    System.err.println("jblockd: cannot remove pidfile " + pidfile + ": " + e.getMessage());
                }
            }
        } finally {
            terminated.countDown();
        }
    }
}
