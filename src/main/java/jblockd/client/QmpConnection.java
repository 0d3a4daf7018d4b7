package jblockd.client;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.StreamReadConstraints;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.function.Consumer;

/**
 * The QMP transport of one client: a socket, one reader virtual thread that parses the stream
 * of JSON objects the daemon writes, replies matched to requests by {@code id}, and events
 * handed to listeners.
 *
 * <p>Two kinds of listeners: <em>inline</em> ones run on the reader thread in stream order,
 * before any later reply is completed (so a job tracker has seen every event that preceded a
 * command's reply, reference/jobs.md §4); they must be quick and never block. <em>User</em>
 * callbacks run on a separate dispatcher virtual thread, so they may call commands themselves.
 *
 * <p>Thread-safe.
 */
final class QmpConnection implements AutoCloseable {
    private static final System.Logger LOG = System.getLogger(QmpConnection.class.getName());
    /** One reply or event is never larger than this (a query-commands reply is ~10 KiB). */
    private static final int MAX_STRING = 16 << 20;

    static final ObjectMapper MAPPER = new ObjectMapper(JsonFactory.builder()
            .streamReadConstraints(StreamReadConstraints.builder()
                    .maxNestingDepth(1000).maxStringLength(MAX_STRING).build())
            // QEMU's lexer accepts single quotes; so does the passthrough of jblockctl
            .enable(com.fasterxml.jackson.core.json.JsonReadFeature.ALLOW_SINGLE_QUOTES)
            .build());

    private final SocketChannel channel;
    private final String peer;
    private final Object writeLock = new Object();
    /** Requests waiting for their reply, in send order (QMP replies come in request order). */
    private final Map<Long, Pending> pending = new LinkedHashMap<>();

    /**
     * A request awaiting its reply; {@code inline} (may be null) runs on the reader thread
     * before the future completes. It is not a dependent of the future: a thread waiting in
     * {@code get()} may run a future's dependents itself when it wakes, and that would apply a
     * reply concurrently with (and possibly after) events the daemon sent after it.
     */
    private record Pending(CompletableFuture<JsonNode> future, Consumer<JsonNode> inline) {
    }
    private final List<Consumer<QmpEvent>> inline = new CopyOnWriteArrayList<>();
    private final List<Runnable> closeHooks = new CopyOnWriteArrayList<>();
    private final LinkedBlockingQueue<Runnable> dispatch = new LinkedBlockingQueue<>();
    private final CompletableFuture<JsonNode> greeting = new CompletableFuture<>();
    private final Thread reader;
    private final Thread dispatcher;
    private long nextId = 1;
    private volatile boolean closed;
    private volatile String closeReason;
    private boolean dispatchStopped; // guarded by dispatch

    QmpConnection(SocketChannel channel, String peer) {
        this.channel = channel;
        this.peer = peer;
        this.reader = Thread.ofVirtual().name("qmp-reader " + peer).start(this::readLoop);
        this.dispatcher = Thread.ofVirtual().name("qmp-events " + peer).start(this::dispatchLoop);
    }

    String peer() {
        return peer;
    }

    CompletableFuture<JsonNode> greeting() {
        return greeting;
    }

    boolean isOpen() {
        return !closed;
    }

    /** Sends {@code {"execute": cmd, "arguments": args, "id": n}}; the future gets the reply object. */
    CompletableFuture<JsonNode> send(String command, JsonNode arguments) {
        ObjectNode req = MAPPER.createObjectNode();
        req.put("execute", command);
        if (arguments != null && !(arguments.isObject() && arguments.isEmpty())) {
            req.set("arguments", arguments);
        }
        return sendRaw(req);
    }

    /**
     * Like {@link #send(String, JsonNode)}, and {@code inline} sees the reply on the reader
     * thread, in stream order with the events: what it applies is never overtaken by an event
     * the daemon sent after the reply. It must be quick and must not block.
     */
    CompletableFuture<JsonNode> send(String command, JsonNode arguments, Consumer<JsonNode> inline) {
        ObjectNode req = MAPPER.createObjectNode();
        req.put("execute", command);
        if (arguments != null && !(arguments.isObject() && arguments.isEmpty())) {
            req.set("arguments", arguments);
        }
        return sendRaw(req, inline);
    }

    /** Sends a request object as it is, adding an {@code id} unless it has one. */
    CompletableFuture<JsonNode> sendRaw(ObjectNode req) {
        return sendRaw(req, null);
    }

    private CompletableFuture<JsonNode> sendRaw(ObjectNode req, Consumer<JsonNode> inline) {
        CompletableFuture<JsonNode> f = new CompletableFuture<>();
        synchronized (writeLock) {
            if (closed) {
                f.completeExceptionally(new QmpConnectionException("QMP connection to " + peer
                        + " is closed" + (closeReason == null ? "" : ": " + closeReason)));
                return f;
            }
            long id;
            synchronized (pending) {
                id = nextId++;
                pending.put(id, new Pending(f, inline));
            }
            // our ids are numbers; a request that brings its own id keeps it and is matched by
            // order, which QMP guarantees (replies come in request order)
            if (!req.has("id")) {
                req.put("id", id);
            }
            try {
                byte[] bytes = (MAPPER.writeValueAsString(req) + "\n").getBytes(StandardCharsets.UTF_8);
                ByteBuffer buf = ByteBuffer.wrap(bytes);
                while (buf.hasRemaining()) {
                    channel.write(buf);
                }
            } catch (IOException e) {
                shutdown("write failed: " + e.getMessage());
            }
        }
        return f;
    }

    void addInlineListener(Consumer<QmpEvent> l) {
        inline.add(l);
    }

    void removeInlineListener(Consumer<QmpEvent> l) {
        inline.remove(l);
    }

    /** Runs a task on the dispatcher thread (user callbacks), after everything queued before it. */
    void dispatch(Runnable task) {
        synchronized (dispatch) {
            if (!dispatchStopped) {
                dispatch.add(task);
                return;
            }
        }
        task.run(); // the dispatcher is gone (connection closed): run it here rather than lose it
    }

    /** Runs when the connection ends (immediately if it already has). */
    void onClose(Runnable hook) {
        closeHooks.add(hook);
        if (closed) {
            hook.run();
        }
    }

    void removeCloseHook(Runnable hook) {
        closeHooks.remove(hook);
    }

    String closeReason() {
        return closeReason;
    }

    private void readLoop() {
        try (InputStream in = new ChannelInput(channel);
             JsonParser p = MAPPER.getFactory().createParser(in)) {
            Iterator<JsonNode> it = MAPPER.readerFor(JsonNode.class).readValues(p);
            while (it.hasNext()) {
                handle(it.next());
            }
            shutdown("connection closed by " + peer);
        } catch (IOException | RuntimeException e) {
            shutdown(closed ? closeReason : "read failed: " + e.getMessage());
        }
    }

    private void handle(JsonNode msg) {
        if (!msg.isObject()) {
            LOG.log(System.Logger.Level.WARNING, "ignoring non-object QMP message: {0}", msg);
        } else if (msg.has("QMP")) {
            greeting.complete(msg);
        } else if (msg.has("event")) {
            QmpEvent ev = QmpEvent.fromWire(msg);
            for (Consumer<QmpEvent> l : inline) {
                try {
                    l.accept(ev);
                } catch (RuntimeException e) {
                    LOG.log(System.Logger.Level.WARNING, "event listener failed", e);
                }
            }
        } else if (msg.has("return") || msg.has("error")) {
            Pending p = takePending(msg.get("id"));
            if (p != null) {
                if (p.inline() != null) {
                    try {
                        p.inline().accept(msg); // here, in stream order with the events
                    } catch (RuntimeException e) {
                        LOG.log(System.Logger.Level.WARNING, "reply handler failed", e);
                    }
                }
                p.future().complete(msg);
            } else {
                LOG.log(System.Logger.Level.WARNING, "reply matches no request: {0}", msg);
            }
        }
    }

    /** Our own numeric id when present, else the oldest request (QMP answers in order). */
    private Pending takePending(JsonNode id) {
        synchronized (pending) {
            if (id != null && id.canConvertToLong() && pending.containsKey(id.asLong())) {
                return pending.remove(id.asLong());
            }
            Iterator<Map.Entry<Long, Pending>> it = pending.entrySet().iterator();
            if (!it.hasNext()) {
                return null;
            }
            Pending p = it.next().getValue();
            it.remove();
            return p;
        }
    }

    private void dispatchLoop() {
        while (true) {
            Runnable r;
            try {
                r = dispatch.take();
            } catch (InterruptedException e) {
                return;
            }
            if (r == STOP) {
                return;
            }
            try {
                r.run();
            } catch (RuntimeException e) {
                LOG.log(System.Logger.Level.WARNING, "event callback failed", e);
            }
        }
    }

    private static final Runnable STOP = () -> { };

    private void shutdown(String reason) {
        List<CompletableFuture<JsonNode>> failed;
        synchronized (writeLock) {
            if (closed) {
                return;
            }
            closeReason = reason;
            closed = true;
        }
        synchronized (pending) {
            failed = new ArrayList<>(pending.values().stream().map(Pending::future).toList());
            pending.clear();
        }
        try {
            channel.close();
        } catch (IOException ignored) {
            // already closing
        }
        QmpConnectionException ex = new QmpConnectionException("QMP connection to " + peer + " ended: " + reason);
        greeting.completeExceptionally(ex);
        for (CompletableFuture<JsonNode> f : failed) {
            f.completeExceptionally(ex);
        }
        for (Runnable hook : closeHooks) {
            try {
                hook.run();
            } catch (RuntimeException e) {
                LOG.log(System.Logger.Level.WARNING, "close hook failed", e);
            }
        }
        synchronized (dispatch) {
            dispatchStopped = true;
            dispatch.add(STOP);
        }
    }

    @Override
    public void close() {
        shutdown("closed by client");
        try {
            reader.join(2000);
            dispatcher.join(2000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /**
     * InputStream over a blocking SocketChannel. Not {@code Channels.newInputStream}: its reads
     * and the output stream's writes may serialise on the channel's blocking lock, and a reader
     * blocked waiting for events would then hold up every request.
     */
    private static final class ChannelInput extends InputStream {
        private final SocketChannel ch;

        ChannelInput(SocketChannel ch) {
            this.ch = ch;
        }

        @Override
        public int read() throws IOException {
            byte[] b = new byte[1];
            int n = read(b, 0, 1);
            return n < 0 ? -1 : b[0] & 0xff;
        }

        @Override
        public int read(byte[] b, int off, int len) throws IOException {
            if (len == 0) {
                return 0;
            }
            return ch.read(ByteBuffer.wrap(b, off, len));
        }
    }
}
