package jblockd.testsupport;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;

/**
 * A small QMP client for tests, over a UNIX or TCP socket (works against jblockd and QEMU).
 * <p>
 * A reader thread parses the server's byte stream into JSON objects (any whitespace between
 * them) and sorts them: events go to {@link #events()}, replies to an internal queue.
 * {@link #execute} sends one request and returns its reply ({@code return} or {@code error}
 * object); replies are matched in order (every request here gets exactly one reply, QMP keeps
 * order). Not for concurrent {@code execute} calls from several threads.
 * <pre>
 *   try (QmpTestClient c = QmpTestClient.connectUnix(sock)) {          // greeting + qmp_capabilities
 *       JsonNode ret = c.executeOk("query-block");
 *       JsonNode err = c.executeError("blockdev-del", Map.of("node-name", "x"));
 *       JsonNode ev  = c.waitEvent("JOB_STATUS_CHANGE",
 *               e -> e.at("/data/status").asText().equals("concluded"), Duration.ofSeconds(10));
 *   }
 * </pre>
 * Default reply timeout: 30 s ({@link #timeout(Duration)}).
 */
public final class QmpTestClient implements AutoCloseable {
    private static final ObjectMapper MAPPER = new ObjectMapper();

    private final SocketChannel channel;
    private final OutputStream out;
    private final JsonNode greeting;
    private final BlockingQueue<JsonNode> replies = new LinkedBlockingQueue<>();
    private final BlockingQueue<JsonNode> events = new LinkedBlockingQueue<>();
    private final Thread reader;
    private volatile boolean eof;
    private Duration timeout = Duration.ofSeconds(30);

    private QmpTestClient(SocketChannel channel) throws IOException {
        this.channel = channel;
        this.out = Channels.newOutputStream(channel);
        InputStream in = Channels.newInputStream(channel);
        BlockingQueue<JsonNode> first = new LinkedBlockingQueue<>();
        this.reader = Thread.ofVirtual().name("qmp-test-client").start(() -> readLoop(in, first));
        try {
            JsonNode g = first.poll(30, TimeUnit.SECONDS);
            if (g == null || !g.has("QMP")) {
                throw new IOException("no QMP greeting, got " + g);
            }
            this.greeting = g;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException(e);
        }
    }

    /** Connects, reads the greeting and negotiates capabilities. */
    public static QmpTestClient connectUnix(Path socket) throws IOException {
        QmpTestClient c = connectUnixRaw(socket);
        c.negotiate();
        return c;
    }

    /** Connects and reads the greeting only (no qmp_capabilities). */
    public static QmpTestClient connectUnixRaw(Path socket) throws IOException {
        SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
        ch.connect(UnixDomainSocketAddress.of(socket));
        return new QmpTestClient(ch);
    }

    public static QmpTestClient connectTcp(String host, int port) throws IOException {
        QmpTestClient c = connectTcpRaw(host, port);
        c.negotiate();
        return c;
    }

    public static QmpTestClient connectTcpRaw(String host, int port) throws IOException {
        SocketChannel ch = SocketChannel.open(new InetSocketAddress(host, port));
        return new QmpTestClient(ch);
    }

    public QmpTestClient timeout(Duration t) {
        this.timeout = t;
        return this;
    }

    /** The greeting object ({@code {"QMP": {...}}}). */
    public JsonNode greeting() {
        return greeting;
    }

    public void negotiate() throws IOException {
        executeOk("qmp_capabilities");
    }

    private void readLoop(InputStream in, BlockingQueue<JsonNode> first) {
        boolean sawGreeting = false;
        try (JsonParser p = MAPPER.getFactory().createParser(in)) {
            while (p.nextToken() == JsonToken.START_OBJECT) {
                JsonNode n = MAPPER.readTree(p);
                if (!sawGreeting) {
                    sawGreeting = true;
                    first.add(n);
                } else if (n.has("event")) {
                    // under the queue's monitor: waitEvent puts skipped events back in front
                    // of newer ones, and an event arriving meanwhile must not overtake them
                    synchronized (events) {
                        events.add(n);
                    }
                } else {
                    replies.add(n);
                }
            }
        } catch (IOException e) {
            // connection closed
        } finally {
            eof = true;
            if (!sawGreeting) {
                first.add(MAPPER.createObjectNode());
            }
            replies.add(MAPPER.createObjectNode().put("__eof", true));
        }
    }

    /** Sends raw bytes (for framing and garbage tests). */
    public void sendRaw(byte[] bytes) throws IOException {
        out.write(bytes);
        out.flush();
    }

    public void sendRaw(String s) throws IOException {
        sendRaw(s.getBytes(StandardCharsets.UTF_8));
    }

    /** The next reply (return or error object); fails on timeout or EOF. */
    public JsonNode nextReply() throws IOException {
        try {
            JsonNode r = replies.poll(timeout.toMillis(), TimeUnit.MILLISECONDS);
            if (r == null) {
                throw new IOException("no QMP reply within " + timeout);
            }
            if (r.has("__eof")) {
                replies.add(r); // keep signalling EOF
                throw new IOException("QMP connection closed");
            }
            return r;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException(e);
        }
    }

    /** True once the server closed the connection. */
    public boolean isEof() {
        return eof;
    }

    /** Builds a request object. */
    public static ObjectNode request(String command, Object args, Object id) {
        ObjectNode req = MAPPER.createObjectNode();
        req.put("execute", command);
        if (args != null) {
            req.set("arguments", MAPPER.valueToTree(args));
        }
        if (id != null) {
            req.set("id", MAPPER.valueToTree(id));
        }
        return req;
    }

    /** Sends {@code {"execute": command, "arguments": args}} and returns the whole reply. */
    public JsonNode execute(String command, Object args) throws IOException {
        return executeWithId(command, args, null);
    }

    public JsonNode execute(String command) throws IOException {
        return execute(command, null);
    }

    /** Like {@link #execute} with an {@code id} (any JSON-able value). */
    public JsonNode executeWithId(String command, Object args, Object id) throws IOException {
        sendRaw(MAPPER.writeValueAsBytes(request(command, args, id)));
        return nextReply();
    }

    /** Executes and returns {@code return}; fails with the error when there is one. */
    public JsonNode executeOk(String command, Object args) throws IOException {
        JsonNode r = execute(command, args);
        if (!r.has("return")) {
            throw new AssertionError(command + " " + args + " failed: " + r);
        }
        return r.get("return");
    }

    public JsonNode executeOk(String command) throws IOException {
        return executeOk(command, null);
    }

    /** Executes and returns the {@code error} object ({@code class}, {@code desc}); fails on success. */
    public JsonNode executeError(String command, Object args) throws IOException {
        JsonNode r = execute(command, args);
        if (!r.has("error")) {
            throw new AssertionError(command + " " + args + " unexpectedly succeeded: " + r);
        }
        return r.get("error");
    }

    /** The event queue (events arrive here as they are read, in order). */
    public BlockingQueue<JsonNode> events() {
        return events;
    }

    /** Waits for the next event called {@code name}, discarding others before it. */
    public JsonNode waitEvent(String name, Duration timeout) throws IOException {
        return waitEvent(name, e -> true, timeout);
    }

    /**
     * Waits for an event called {@code name} that matches {@code filter}. Events that do not
     * match are kept in the queue (in order) for later calls.
     */
    public JsonNode waitEvent(String name, Predicate<JsonNode> filter, Duration timeout) throws IOException {
        long deadline = System.nanoTime() + timeout.toNanos();
        List<JsonNode> skipped = new ArrayList<>();
        try {
            while (true) {
                long left = deadline - System.nanoTime();
                JsonNode e = left <= 0 ? null : events.poll(left, TimeUnit.NANOSECONDS);
                if (e == null) {
                    throw new IOException("no event " + name + " within " + timeout + "; other events: " + skipped);
                }
                if (e.path("event").asText().equals(name) && filter.test(e)) {
                    return e;
                }
                skipped.add(e);
            }
        } catch (InterruptedException ex) {
            Thread.currentThread().interrupt();
            throw new IOException(ex);
        } finally {
            if (!skipped.isEmpty()) {
                synchronized (events) {
                    List<JsonNode> rest = new ArrayList<>();
                    events.drainTo(rest);
                    events.addAll(skipped);
                    events.addAll(rest);
                }
            }
        }
    }

    /** Removes and returns every queued event. */
    public List<JsonNode> drainEvents() {
        List<JsonNode> l = new ArrayList<>();
        events.drainTo(l);
        return l;
    }

    /** Convenience: {@code Map.of(...)} arguments as a JSON object. */
    public static ObjectNode args(Map<String, ?> m) {
        return MAPPER.valueToTree(m);
    }

    /** Parses JSON text (test helper). */
    public static JsonNode json(String text) {
        try {
            return MAPPER.readTree(text);
        } catch (IOException e) {
            throw new IllegalArgumentException(e);
        }
    }

    /** Names of the members of an object, in order. */
    public static List<String> memberNames(JsonNode obj) {
        List<String> names = new ArrayList<>();
        for (Iterator<String> it = obj.fieldNames(); it.hasNext(); ) {
            names.add(it.next());
        }
        return names;
    }

    @Override
    public void close() {
        try {
            channel.close();
        } catch (IOException ignored) {
            // closing anyway
        }
        try {
            reader.join(2000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
