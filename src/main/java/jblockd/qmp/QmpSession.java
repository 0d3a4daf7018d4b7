package jblockd.qmp;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.ByteChannel;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.exc.StreamConstraintsException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;

import jblockd.qapi.ErrorClass;
import jblockd.qapi.QmpError;

/**
 * One QMP client connection (reference/qmp.md §1-§3): greeting, capability negotiation, then
 * requests answered in order, with events interleaved once negotiated.
 * <p>
 * Threads: the connection's own thread (a platform thread, see QmpServer) reads, frames ({@link QmpFramer}), parses and
 * dispatches requests one after the other, so replies leave in request order. A second virtual
 * thread writes the outbox: greeting, events and replies that found output pending, each one
 * JSON line ending in {@code \r\n} as QEMU writes them. When nothing is pending the reader
 * writes its reply itself (saves a thread hand-off per request).
 * <p>
 * Slow clients: the outbox holds at most {@code outboxCapacity} messages. A reply waits for room
 * (that client's own requests stall, nobody else's); an event that finds the outbox full drops
 * the client: its connection is closed with a log line, because events must never block their
 * emitter (a job or guest I/O thread) and silently losing events would be worse for a client
 * that relies on them. QEMU instead buffers without bound.
 */
final class QmpSession implements EventFanout.Subscriber, CommandContext.Negotiation {
    private static final byte[] POISON = new byte[0];
    private static final byte[] CRLF = {'\r', '\n'};
    private static final JsonNodeFactory NF = JsonNodeFactory.instance;

    private final ByteChannel channel;
    private final String peer;
    private final QmpDispatcher dispatcher;
    private final EventFanout fanout;
    private final byte[] greeting;
    private final QmpFramer framer;
    private final BlockingQueue<byte[]> outbox;
    private final Consumer<QmpSession> onClose;
    private final CountDownLatch writerDone = new CountDownLatch(1);
    /** Serialises socket writes between the writer thread and the reader's direct replies. */
    private final java.util.concurrent.locks.ReentrantLock writeLock = new java.util.concurrent.locks.ReentrantLock();
    /** Messages queued or taken by the writer but not yet written (guarded by writeLock for reads that matter). */
    private final java.util.concurrent.atomic.AtomicInteger pending = new java.util.concurrent.atomic.AtomicInteger();
    private volatile boolean negotiated;
    private volatile boolean closed;
    private volatile boolean stopReading;
    private boolean eof;

    QmpSession(ByteChannel channel, String peer, QmpDispatcher dispatcher, EventFanout fanout, byte[] greeting,
               int maxMessage, int outboxCapacity, Consumer<QmpSession> onClose) {
        this.channel = channel;
        this.peer = peer;
        this.dispatcher = dispatcher;
        this.fanout = fanout;
        this.greeting = greeting;
        this.framer = new QmpFramer(maxMessage, QmpJson.MAX_NESTING);
        this.outbox = new LinkedBlockingQueue<>(outboxCapacity);
        this.onClose = onClose;
    }

    String peer() {
        return peer;
    }

    /** Serves the connection until the client leaves or the session is closed. */
    void run() {
        Thread.ofVirtual().name("qmp-writer " + peer).start(this::writeLoop);
        fanout.subscribe(this);
        try {
            pending.incrementAndGet();
            outbox.put(greeting);
            ByteBuffer buf = ByteBuffer.allocate(64 * 1024);
            QmpFramer.Sink sink = new QmpFramer.Sink() {
                @Override
                public void text(byte[] jsonText) {
                    handle(jsonText);
                }

                @Override
                public void error(String desc) {
                    reply(errorReply(QmpError.generic(desc), null));
                }
            };
            while (!closed && !stopReading) {
                buf.clear();
                int n = channel.read(buf);
                if (n < 0) {
                    // The client shut down its sending side (echo ... | socat - UNIX:...): every
                    // request it sent has been answered or queued; let those replies out.
                    eof = true;
                    break;
                }
                framer.feed(buf.array(), 0, n, sink);
            }
        } catch (IOException e) {
            // client went away or we closed the channel
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } finally {
            if (eof && !stopReading) {
                closeGracefully(5000);
            } else if (!stopReading) {
                close();
            }
        }
    }

    private void handle(byte[] text) {
        JsonNode req;
        if (!validUtf8(text)) {
            // json-lexer.c rejects the byte; QEMU reports it as U+FFFD
            reply(errorReply(QmpError.generic("JSON parse error, stray '\uFFFD'"), null));
            return;
        }
        try {
            req = dispatcher.json().parse(text);
        } catch (IOException e) {
            reply(errorReply(QmpError.generic(parseErrorDesc(e)), null));
            return;
        }
        if (!req.isObject()) {
            reply(errorReply(QmpError.generic("QMP input must be a JSON object"), null));
            return;
        }
        JsonNode id = req.get("id");
        String name;
        JsonNode args;
        try {
            name = checkEnvelope(req);
            args = req.get("arguments");
        } catch (QmpError e) {
            reply(errorReply(e, id));
            return;
        }
        CommandContext ctx = new CommandContext(this);
        ObjectNode rsp;
        try {
            if (!negotiated && !name.equals("qmp_capabilities")) {
                // monitor/qmp.c: in negotiation mode, "command not found" gets this text
                throw new QmpError(ErrorClass.COMMAND_NOT_FOUND,
                        "Expecting capabilities negotiation with 'qmp_capabilities'");
            }
            JsonNode result = dispatcher.execute(name, args, false, ctx);
            rsp = NF.objectNode();
            rsp.set("return", result);
            if (id != null) {
                rsp.set("id", id);
            }
        } catch (QmpError e) {
            rsp = errorReply(e, id);
        }
        reply(rsp);
        ctx.runAfterReply();
    }

    private static boolean validUtf8(byte[] text) {
        for (byte b : text) {
            if (b < 0) {
                try {
                    java.nio.charset.StandardCharsets.UTF_8.newDecoder()
                            .onMalformedInput(java.nio.charset.CodingErrorAction.REPORT)
                            .onUnmappableCharacter(java.nio.charset.CodingErrorAction.REPORT)
                            .decode(ByteBuffer.wrap(text));
                    return true;
                } catch (java.nio.charset.CharacterCodingException e) {
                    return false;
                }
            }
        }
        return true;
    }

    /** qapi/qmp-dispatch.c qmp_dispatch_check_obj(), members checked in input order. */
    static String checkEnvelope(JsonNode req) throws QmpError {
        String name = null;
        for (Map.Entry<String, JsonNode> e : req.properties()) {
            String k = e.getKey();
            JsonNode v = e.getValue();
            switch (k) {
                case "execute" -> {
                    if (!v.isTextual()) {
                        throw QmpError.generic("QMP input member 'execute' must be a string");
                    }
                    name = v.asText();
                }
                case "arguments" -> {
                    if (!v.isObject()) {
                        throw QmpError.generic("QMP input member 'arguments' must be an object");
                    }
                }
                case "id" -> {
                }
                default -> throw QmpError.generic("QMP input member '" + k + "' is unexpected");
            }
        }
        if (name == null) {
            throw QmpError.generic("QMP input lacks member 'execute'");
        }
        return name;
    }

    /**
     * QEMU's json-parser.c / json-lexer.c wording for the Jackson failure (reference/qmp.md §3).
     */
    static String parseErrorDesc(IOException e) {
        if (e instanceof StreamConstraintsException sce) {
            String m = String.valueOf(sce.getMessage());
            return m.contains("nesting") || m.contains("depth") ? "JSON nesting depth limit exceeded"
                    : "JSON token size limit exceeded";
        }
        String m = e instanceof JsonProcessingException jpe ? jpe.getOriginalMessage() : e.getMessage();
        if (m == null) {
            return "JSON parse error, " + e.getClass().getSimpleName();
        }
        if (m.contains("Duplicate field") || m.contains("Duplicate Object property")) {
            return "JSON parse error, duplicate key";
        }
        if (m.contains("UTF-8") || m.contains("UTF8") || e instanceof java.io.CharConversionException) {
            return "JSON parse error, stray '\uFFFD'";
        }
        int tok = m.indexOf("Unrecognized token '");
        if (tok >= 0) {
            int start = tok + "Unrecognized token '".length();
            int end = m.indexOf('\'', start);
            if (start < m.length() && m.charAt(start) > 0x7e) {
                return "JSON parse error, stray '\uFFFD'"; // as below: a non-ASCII byte
            }
            return "JSON parse error, invalid keyword '" + m.substring(start, end < 0 ? m.length() : end) + "'";
        }
        if (m.contains("was expecting a colon")) {
            return "JSON parse error, missing : in object pair";
        }
        if (m.contains("was expecting comma to separate Object")) {
            return "JSON parse error, expected separator in dict";
        }
        if (m.contains("was expecting comma to separate Array")) {
            return "JSON parse error, expected separator in list";
        }
        int ctrl = m.indexOf("(CTRL-CHAR, code ");
        if (ctrl >= 0) {
            // json-lexer.c: a control character is a stray byte of its own
            int start = ctrl + "(CTRL-CHAR, code ".length();
            int end = m.indexOf(')', start);
            try {
                return "JSON parse error, stray '" + (char) Integer.parseInt(m.substring(start, end)) + "'";
            } catch (NumberFormatException | StringIndexOutOfBoundsException ignored) {
                return "JSON parse error, expecting value";
            }
        }
        if (m.contains("Unexpected end-of-input") || m.contains("end-of-input")) {
            return "JSON parse error, premature EOI";
        }
        if (m.contains("Unexpected character ('")) {
            int start = m.indexOf("('") + 2;
            char c = m.charAt(start);
            if ("}],:".indexOf(c) >= 0) {
                return "JSON parse error, expecting value";
            }
            if (m.contains("was expecting double-quote to start field name")) {
                return "JSON parse error, key is not a string in object";
            }
            // json-lexer.c reads bytes: any non-ASCII character outside a string is a stray
            // byte, shown as U+FFFD (qemu-storage-daemon 7.2, for a UTF-8 BOM or an 'é')
            return "JSON parse error, stray '" + (c > 0x7e ? '\uFFFD' : c) + "'";
        }
        return "JSON parse error, expecting value";
    }

    private static ObjectNode errorReply(QmpError e, JsonNode id) {
        ObjectNode rsp = NF.objectNode();
        ObjectNode err = rsp.putObject("error");
        err.put("class", e.errorClass().wire());
        err.put("desc", e.desc());
        if (id != null) {
            rsp.set("id", id);
        }
        return rsp;
    }

    /**
     * Sends a reply. Fast path: when nothing is queued or being written, the reader thread writes
     * the reply itself (one thread hand-off less per request); otherwise it is queued behind the
     * pending output, waiting for room (back-pressure on this client only). Either way replies
     * leave in request order, and never before output queued earlier.
     */
    private void reply(ObjectNode rsp) {
        byte[] bytes = dispatcher.json().write(rsp);
        if (writeLock.tryLock()) {
            try {
                if (pending.get() == 0 && !closed) {
                    writeFully(ByteBuffer.wrap(withCrlf(bytes)));
                    return;
                }
            } catch (IOException e) {
                close();
                return;
            } finally {
                writeLock.unlock();
            }
        }
        try {
            while (!closed) {
                pending.incrementAndGet();
                if (outbox.offer(bytes, 100, TimeUnit.MILLISECONDS)) {
                    return;
                }
                pending.decrementAndGet();
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            close();
        }
    }

    @Override
    public boolean wantsEvents() {
        return negotiated && !closed;
    }

    @Override
    public void offerEvent(byte[] message) {
        pending.incrementAndGet();
        if (!outbox.offer(message)) {
            pending.decrementAndGet();
            System.err.println("jblockd: QMP client " + peer + " dropped: it does not read its output ("
                    + (outbox.size() + outbox.remainingCapacity()) + " messages queued)");
            close();
        }
    }

    @Override
    public boolean negotiated() {
        return negotiated;
    }

    @Override
    public void complete() {
        negotiated = true;
    }

    private static byte[] withCrlf(byte[] b) {
        byte[] out = java.util.Arrays.copyOf(b, b.length + 2);
        out[b.length] = '\r';
        out[b.length + 1] = '\n';
        return out;
    }

    private void writeFully(ByteBuffer out) throws IOException {
        while (out.hasRemaining()) {
            channel.write(out);
        }
    }

    /** Drains the outbox in batches; holds the write lock while writing a batch. */
    private void writeLoop() {
        List<byte[]> batch = new ArrayList<>();
        try {
            while (true) {
                byte[] first = outbox.take();
                writeLock.lock();
                boolean end = false;
                try {
                    batch.clear();
                    batch.add(first);
                    outbox.drainTo(batch, 255);
                    int size = 0;
                    int messages = 0;
                    for (byte[] b : batch) {
                        if (b == POISON) {
                            end = true;
                            break;
                        }
                        size += b.length + 2;
                        messages++;
                    }
                    ByteBuffer out = ByteBuffer.allocate(size);
                    for (int i = 0; i < messages; i++) {
                        out.put(batch.get(i)).put(CRLF);
                    }
                    out.flip();
                    writeFully(out);
                    pending.addAndGet(-messages);
                } finally {
                    writeLock.unlock();
                }
                if (end) {
                    return;
                }
            }
        } catch (IOException e) {
            // client gone
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } finally {
            writerDone.countDown();
            close();
        }
    }

    /** Closes at once; queued output is discarded. Idempotent. */
    void close() {
        if (closed) {
            return;
        }
        closed = true;
        fanout.unsubscribe(this);
        outbox.clear();
        outbox.offer(POISON);
        try {
            channel.close();
        } catch (IOException ignored) {
            // nothing left to do
        }
        onClose.accept(this);
    }

    /**
     * Stops reading, lets the writer send what is queued (e.g. quit's SHUTDOWN and reply) for at
     * most {@code millis}, then closes.
     */
    void closeGracefully(long millis) {
        stopReading = true;
        fanout.unsubscribe(this);
        if (!closed) {
            try {
                if (outbox.offer(POISON, millis, TimeUnit.MILLISECONDS)) {
                    writerDone.await(millis, TimeUnit.MILLISECONDS);
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        close();
    }
}
