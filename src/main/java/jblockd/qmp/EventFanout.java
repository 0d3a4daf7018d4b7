package jblockd.qmp;

import java.time.Instant;
import java.time.InstantSource;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.function.Consumer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;

import jblockd.qapi.ErrorAction;
import jblockd.qapi.IoOperation;
import jblockd.qapi.JobStatus;
import jblockd.qapi.JobType;
import jblockd.qapi.QapiEvents;

/**
 * Delivers every event to every negotiated QMP session and to in-process listeners
 * (reference/qmp.md §6). An event is serialised once
 * ({@code {"timestamp": {"seconds", "microseconds"}, "event", "data"}}, {@code data} left out
 * when the event has none) and offered to each session's bounded outbox; a full outbox drops
 * that client (see {@link QmpSession}), so emitting never blocks the caller (job threads,
 * guest I/O). Members and their order follow QEMU 7.2 (reference/jobs.md §6, errors.md §4).
 * Thread-safe.
 */
public final class EventFanout implements QapiEvents {

    /** A QMP session as the fan-out sees it. */
    interface Subscriber {
        boolean wantsEvents();

        /** Queues the encoded event; must not block. */
        void offerEvent(byte[] message);
    }

    private static final JsonNodeFactory NF = JsonNodeFactory.instance;

    private final QmpJson json;
    private final InstantSource clock;
    private final CopyOnWriteArrayList<Subscriber> sessions = new CopyOnWriteArrayList<>();
    private final CopyOnWriteArrayList<Consumer<JsonNode>> listeners = new CopyOnWriteArrayList<>();

    public EventFanout(QmpJson json, InstantSource clock) {
        this.json = json;
        this.clock = clock;
    }

    void subscribe(Subscriber s) {
        sessions.add(s);
    }

    void unsubscribe(Subscriber s) {
        sessions.remove(s);
    }

    /**
     * Adds an in-process listener; it receives each event object exactly as clients do. It is
     * called on the emitting thread and must return quickly.
     */
    public void addListener(Consumer<JsonNode> listener) {
        listeners.add(listener);
    }

    public void removeListener(Consumer<JsonNode> listener) {
        listeners.remove(listener);
    }

    /**
     * Emits any declared event. {@code data} null or empty leaves the {@code data} member out
     * (QEMU does so for events without data members such as STOP and RESUME).
     */
    public void emit(String name, ObjectNode data) {
        Instant now = clock.instant();
        ObjectNode ev = NF.objectNode();
        ObjectNode ts = ev.putObject("timestamp");
        ts.put("seconds", now.getEpochSecond());
        ts.put("microseconds", now.getNano() / 1000);
        ev.put("event", name);
        if (data != null && !data.isEmpty()) {
            ev.set("data", data);
        }
        byte[] bytes = json.write(ev);
        for (Subscriber s : sessions) {
            if (s.wantsEvents()) {
                s.offerEvent(bytes);
            }
        }
        for (Consumer<JsonNode> l : listeners) {
            try {
                l.accept(ev);
            } catch (RuntimeException e) {
                System.err.println("jblockd: event listener failed: " + e);
            }
        }
    }

    private static ObjectNode progress(JobType type, String device, long len, long offset, long speed) {
        ObjectNode d = NF.objectNode();
        d.put("device", device);
        d.put("len", len);
        d.put("offset", offset);
        d.put("speed", speed);
        d.put("type", type.wire());
        return d;
    }

    @Override
    public void jobStatusChange(String id, JobStatus status) {
        ObjectNode d = NF.objectNode();
        d.put("status", status.wire());
        d.put("id", id);
        emit("JOB_STATUS_CHANGE", d);
    }

    @Override
    public void blockJobCompleted(JobType type, String device, long len, long offset, long speed, String error) {
        ObjectNode d = progress(type, device, len, offset, speed);
        if (error != null) {
            d.put("error", error);
        }
        emit("BLOCK_JOB_COMPLETED", d);
    }

    @Override
    public void blockJobCancelled(JobType type, String device, long len, long offset, long speed) {
        emit("BLOCK_JOB_CANCELLED", progress(type, device, len, offset, speed));
    }

    @Override
    public void blockJobError(String device, IoOperation operation, ErrorAction action) {
        ObjectNode d = NF.objectNode();
        d.put("device", device);
        d.put("operation", operation.wire());
        d.put("action", action.wire());
        emit("BLOCK_JOB_ERROR", d);
    }

    @Override
    public void blockJobReady(JobType type, String device, long len, long offset, long speed) {
        emit("BLOCK_JOB_READY", progress(type, device, len, offset, speed));
    }

    @Override
    public void blockJobPending(JobType type, String id) {
        ObjectNode d = NF.objectNode();
        d.put("type", type.wire());
        d.put("id", id);
        emit("BLOCK_JOB_PENDING", d);
    }

    @Override
    public void blockIoError(String device, String nodeName, IoOperation operation, ErrorAction action,
                             Boolean nospace, String reason) {
        ObjectNode d = NF.objectNode();
        d.put("device", device == null ? "" : device);
        if (nospace != null) {
            d.put("nospace", nospace);
        }
        d.put("node-name", nodeName);
        d.put("reason", reason);
        d.put("operation", operation.wire());
        d.put("action", action.wire());
        emit("BLOCK_IO_ERROR", d);
    }

    @Override
    public void stop() {
        emit("STOP", null);
    }

    @Override
    public void resume() {
        emit("RESUME", null);
    }

    @Override
    public void shutdown(boolean guest, String reason) {
        ObjectNode d = NF.objectNode();
        d.put("guest", guest);
        d.put("reason", reason);
        emit("SHUTDOWN", d);
    }

    @Override
    public void blockExportDeleted(String id) {
        ObjectNode d = NF.objectNode();
        d.put("id", id);
        emit("BLOCK_EXPORT_DELETED", d);
    }

    @Override
    public void blockWriteThreshold(String nodeName, long amountExceeded, long writeThreshold) {
        ObjectNode d = NF.objectNode();
        d.put("node-name", nodeName);
        // QEMU's members are uint64, in this order
        d.put("write-threshold", new java.math.BigInteger(Long.toUnsignedString(writeThreshold)));
        d.put("amount-exceeded", new java.math.BigInteger(Long.toUnsignedString(amountExceeded)));
        emit("BLOCK_WRITE_THRESHOLD", d);
    }
}
