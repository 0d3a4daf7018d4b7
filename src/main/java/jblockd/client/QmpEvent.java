package jblockd.client;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import java.time.Instant;
import java.util.Optional;
import jblockd.qapi.ErrorAction;
import jblockd.qapi.IoOperation;
import jblockd.qapi.JobStatus;
import jblockd.qapi.JobType;

/**
 * One QMP event: {@code {"event": NAME, "data": {...}, "timestamp": {"seconds", "microseconds"}}}
 * (qmp-spec, reference/qmp.md §6). {@code data} is an empty object when the event has none
 * (STOP, RESUME). The {@code as*} methods give typed views of the job events
 * (reference/jobs.md §6).
 */
public record QmpEvent(String name, JsonNode data, Instant timestamp) {

    public static final String JOB_STATUS_CHANGE = "JOB_STATUS_CHANGE";
    public static final String BLOCK_JOB_COMPLETED = "BLOCK_JOB_COMPLETED";
    public static final String BLOCK_JOB_CANCELLED = "BLOCK_JOB_CANCELLED";
    public static final String BLOCK_JOB_ERROR = "BLOCK_JOB_ERROR";
    public static final String BLOCK_JOB_READY = "BLOCK_JOB_READY";
    public static final String BLOCK_JOB_PENDING = "BLOCK_JOB_PENDING";
    public static final String BLOCK_IO_ERROR = "BLOCK_IO_ERROR";
    public static final String STOP = "STOP";
    public static final String RESUME = "RESUME";
    public static final String SHUTDOWN = "SHUTDOWN";

    public QmpEvent {
        if (data == null || data.isNull() || data.isMissingNode()) {
            data = JsonNodeFactory.instance.objectNode();
        }
    }

    /** Parses a wire event object (the caller checked it has an {@code event} member). */
    static QmpEvent fromWire(JsonNode msg) {
        JsonNode ts = msg.path("timestamp");
        Instant when = Instant.ofEpochSecond(ts.path("seconds").asLong(0),
                ts.path("microseconds").asLong(0) * 1000L);
        return new QmpEvent(msg.path("event").asText(), msg.get("data"), when);
    }

    /** {@code JOB_STATUS_CHANGE {status, id}}. */
    public record JobStatusChange(String id, JobStatus status) {
    }

    /**
     * {@code BLOCK_JOB_COMPLETED / CANCELLED / READY {type, device, len, offset, speed[, error]}};
     * {@code device} is the job id; {@code error} is null unless a COMPLETED job failed.
     */
    public record BlockJobEvent(String event, JobType type, String device, long len, long offset,
                                long speed, String error) {
    }

    /** {@code BLOCK_JOB_ERROR {device, operation, action}} ({@code device} is the job id). */
    public record BlockJobError(String device, IoOperation operation, ErrorAction action) {
    }

    /** The job id this event is about, for any job event; empty otherwise. */
    public Optional<String> jobId() {
        return switch (name) {
            case JOB_STATUS_CHANGE, BLOCK_JOB_PENDING -> text("id");
            case BLOCK_JOB_COMPLETED, BLOCK_JOB_CANCELLED, BLOCK_JOB_ERROR, BLOCK_JOB_READY -> text("device");
            default -> Optional.empty();
        };
    }

    public Optional<JobStatusChange> asJobStatusChange() {
        if (!name.equals(JOB_STATUS_CHANGE)) {
            return Optional.empty();
        }
        return Optional.of(new JobStatusChange(data.path("id").asText(),
                JobStatus.fromWire(data.path("status").asText())));
    }

    public Optional<BlockJobEvent> asBlockJobEvent() {
        if (!(name.equals(BLOCK_JOB_COMPLETED) || name.equals(BLOCK_JOB_CANCELLED)
                || name.equals(BLOCK_JOB_READY))) {
            return Optional.empty();
        }
        return Optional.of(new BlockJobEvent(name, JobType.fromWire(data.path("type").asText()),
                data.path("device").asText(), data.path("len").asLong(), data.path("offset").asLong(),
                data.path("speed").asLong(), text("error").orElse(null)));
    }

    public Optional<BlockJobError> asBlockJobError() {
        if (!name.equals(BLOCK_JOB_ERROR)) {
            return Optional.empty();
        }
        return Optional.of(new BlockJobError(data.path("device").asText(),
                IoOperation.fromWire(data.path("operation").asText()),
                ErrorAction.fromWire(data.path("action").asText())));
    }

    private Optional<String> text(String member) {
        JsonNode n = data.get(member);
        return n == null || n.isNull() ? Optional.empty() : Optional.of(n.asText());
    }
}
