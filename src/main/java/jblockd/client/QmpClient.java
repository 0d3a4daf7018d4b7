package jblockd.client;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.function.Consumer;
import jblockd.qapi.RunStatus;

/**
 * A typed QMP client for jblockd (and QEMU 7.2, which speaks the same protocol).
 *
 * <pre>{@code
 * try (QmpClient qmp = QmpClient.connectUnix(Path.of("/run/jblockd.sock"))) {
 *     Job job = qmp.jobs().driveBackup(DriveBackup.of("drive0", "/backup/disk.img").format("raw"));
 *     job.onProgress(p -> System.out.println(p.percent() + "%"));
 *     JobResult r = job.awaitCompletion();
 * }
 * }</pre>
 *
 * <p>Connecting reads the greeting and negotiates capabilities ({@code qmp_capabilities}); a
 * reader virtual thread then matches replies to requests by {@code id} and hands events to
 * subscribers ({@link #events()}, {@link #onEvent}). Commands are grouped as in the QAPI schema:
 * session and run state here, {@link #block()}, {@link #exports()}, {@link #jobs()},
 * {@link #bitmaps()}.
 *
 * <p>Thread-safe: any number of threads may issue commands at once. A failed command throws
 * {@link QmpException} (typed by error class); a lost connection throws
 * {@link QmpConnectionException}.
 */
public final class QmpClient implements AutoCloseable {
    private static final Duration GREETING_TIMEOUT = Duration.ofSeconds(10);

    private final QmpConnection conn;
    private final JsonNode greeting;
    private final BlockCommands block = new BlockCommands(this);
    private final ExportCommands exports = new ExportCommands(this);
    private final JobCommands jobs = new JobCommands(this);
    private final BitmapCommands bitmaps = new BitmapCommands(this);

    private QmpClient(QmpConnection conn) {
        this.conn = conn;
        try {
            this.greeting = await(conn.greeting(), GREETING_TIMEOUT, "greeting");
            execute("qmp_capabilities", null);
        } catch (RuntimeException e) {
            conn.close();
            throw e;
        }
    }

    /** Connects to a UNIX socket ({@code --qmp unix:PATH}). */
    public static QmpClient connectUnix(Path socket) throws IOException {
        SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
        try {
            ch.connect(UnixDomainSocketAddress.of(socket));
        } catch (IOException e) {
            ch.close();
            throw e;
        }
        return new QmpClient(new QmpConnection(ch, socket.toString()));
    }

    /** Connects to a TCP socket ({@code --qmp tcp:HOST:PORT}). */
    public static QmpClient connectTcp(String host, int port) throws IOException {
        SocketChannel ch = SocketChannel.open();
        try {
            ch.connect(new InetSocketAddress(host, port));
            ch.socket().setTcpNoDelay(true);
        } catch (IOException e) {
            ch.close();
            throw e;
        }
        return new QmpClient(new QmpConnection(ch, host + ":" + port));
    }

    /**
     * Connects to an address in jblockd's {@code --qmp} spelling: {@code unix:PATH},
     * {@code tcp:HOST:PORT}, or a plain path (a UNIX socket).
     */
    public static QmpClient connect(String address) throws IOException {
        if (address.startsWith("tcp:")) {
            String hp = address.substring(4);
            int colon = hp.lastIndexOf(':');
            if (colon < 0) {
                throw new IllegalArgumentException("expected tcp:HOST:PORT, got '" + address + "'");
            }
            String host = hp.substring(0, colon);
            if (host.startsWith("[") && host.endsWith("]")) {
                host = host.substring(1, host.length() - 1);
            }
            int port;
            try {
                port = Integer.parseInt(hp.substring(colon + 1));
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("bad port in '" + address + "'");
            }
            return connectTcp(host.isEmpty() ? "localhost" : host, port);
        }
        return connectUnix(Path.of(address.startsWith("unix:") ? address.substring(5) : address));
    }

    /** The greeting object as the server sent it: {@code {"QMP": {"version": ..., "capabilities": [...]}}}. */
    public JsonNode greeting() {
        return greeting;
    }

    /** Where this client is connected to (socket path or host:port). */
    public String peer() {
        return conn.peer();
    }

    public boolean isOpen() {
        return conn.isOpen();
    }

    // ---------------------------------------------------------------- raw access

    /**
     * Runs a command and returns its {@code return} value. {@code args} is null, a
     * {@link JsonNode}, a {@link QmpArgs} builder, or anything Jackson turns into an object
     * (a Map, a record).
     *
     * @throws QmpException the daemon answered with an error
     * @throws QmpConnectionException the connection ended first
     */
    public JsonNode execute(String command, Object args) {
        return result(command, await(conn.send(command, toArgs(args)), null, command));
    }

    /** Like {@link #execute(String, Object)} but gives up after {@code timeout}. */
    public JsonNode execute(String command, Object args, Duration timeout) {
        return result(command, await(conn.send(command, toArgs(args)), timeout, command));
    }

    /** Sends a command without waiting; the future completes with the return value or a QmpException. */
    public CompletableFuture<JsonNode> executeAsync(String command, Object args) {
        return conn.send(command, toArgs(args)).thenApply(reply -> result(command, reply));
    }

    /**
     * Sends a request object exactly as given (plus an {@code id} when it has none) and returns
     * the whole reply object, error or not: the passthrough of {@code jblockctl qmp}.
     */
    public JsonNode executeRequest(ObjectNode request, Duration timeout) {
        String what = request.path("execute").asText(request.path("exec-oob").asText("request"));
        JsonNode reply = await(conn.sendRaw(request.deepCopy()), timeout, what);
        if (!request.has("id") && reply instanceof ObjectNode o) {
            o.remove("id"); // the id was ours, not the caller's
        }
        return reply;
    }

    // ---------------------------------------------------------------- events

    /**
     * A blocking stream of every event from now on; close it when done (it buffers until then).
     */
    public EventStream events() {
        return new EventStream(conn);
    }

    /**
     * Calls {@code listener} for every event from now on, on the client's event thread (in
     * arrival order; the listener may run commands). Close the returned handle to stop.
     */
    public Subscription onEvent(Consumer<QmpEvent> listener) {
        Consumer<QmpEvent> inline = ev -> conn.dispatch(() -> listener.accept(ev));
        conn.addInlineListener(inline);
        return () -> conn.removeInlineListener(inline);
    }

    // ---------------------------------------------------------------- session and run state

    /** {@code query-version}. */
    public VersionInfo queryVersion() {
        return VersionInfo.from(execute("query-version", null));
    }

    /** {@code query-commands}: the command names the server accepts. */
    public List<String> queryCommands() {
        List<String> names = new ArrayList<>();
        for (JsonNode n : execute("query-commands", null)) {
            names.add(n.path("name").asText());
        }
        return names;
    }

    /** {@code quit}: the daemon cancels its jobs, closes its images and exits. */
    public void quit() {
        execute("quit", null);
    }

    /** {@code stop}: holds all guest I/O (emits STOP unless already stopped). */
    public void stop() {
        execute("stop", null);
    }

    /** {@code cont}: resumes guest I/O, retrying requests held by an error stop (emits RESUME). */
    public void cont() {
        execute("cont", null);
    }

    /** {@code query-status}. */
    public StatusInfo queryStatus() {
        JsonNode r = execute("query-status", null);
        String status = r.path("status").asText();
        return new StatusInfo(RunStatus.fromWire(status), status, r.path("running").asBoolean());
    }

    /** The graph commands: blockdev-add/del, query-block, query-named-block-nodes. */
    public BlockCommands block() {
        return block;
    }

    /** The export commands: nbd-server-*, block-export-*. */
    public ExportCommands exports() {
        return exports;
    }

    /** The job commands: backup, mirror, stream, commit and the job verbs. */
    public JobCommands jobs() {
        return jobs;
    }

    /** The dirty-bitmap commands: block-dirty-bitmap-* and the nodes' bitmap lists. */
    public BitmapCommands bitmaps() {
        return bitmaps;
    }

    @Override
    public void close() {
        conn.close();
    }

    QmpConnection connection() {
        return conn;
    }

    // ---------------------------------------------------------------- helpers

    static JsonNode toArgs(Object args) {
        if (args == null) {
            return null;
        }
        if (args instanceof QmpArgs<?> q) {
            return q.toJson();
        }
        if (args instanceof JsonNode j) {
            return j;
        }
        return QmpConnection.MAPPER.valueToTree(args);
    }

    private static JsonNode result(String command, JsonNode reply) {
        JsonNode err = reply.get("error");
        if (err != null) {
            throw QmpException.of(err.path("class").asText("GenericError"), err.path("desc").asText(), command);
        }
        return reply.path("return");
    }

    private static JsonNode await(CompletableFuture<JsonNode> f, Duration timeout, String what) {
        try {
            return timeout == null ? f.get() : f.get(timeout.toNanos(), TimeUnit.NANOSECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new QmpConnectionException("interrupted while waiting for " + what, e);
        } catch (TimeoutException e) {
            f.cancel(false);
            throw new QmpConnectionException("no answer to " + what + " within " + timeout, e);
        } catch (ExecutionException e) {
            if (e.getCause() instanceof RuntimeException re) {
                throw re;
            }
            throw new QmpConnectionException(what + " failed", e.getCause());
        }
    }
}
