package jblockd.client;

import com.fasterxml.jackson.databind.JsonNode;
import jblockd.qapi.IoStatus;
import jblockd.qapi.JobStatus;
import jblockd.qapi.JobType;

/**
 * One entry of {@code query-block-jobs} (BlockJobInfo, reference/jobs.md §7). {@code device}
 * is the job id; {@code error} is null unless the job concluded with a failure or a cancel.
 */
public record BlockJobInfo(JobType type, String device, long len, long offset, boolean busy, boolean paused,
                           long speed, IoStatus ioStatus, boolean ready, JobStatus status,
                           boolean autoFinalize, boolean autoDismiss, String error) {
    static BlockJobInfo from(JsonNode n) {
        return new BlockJobInfo(JobType.fromWire(n.path("type").asText()), n.path("device").asText(),
                n.path("len").asLong(), n.path("offset").asLong(), n.path("busy").asBoolean(),
                n.path("paused").asBoolean(), n.path("speed").asLong(),
                IoStatus.fromWire(n.path("io-status").asText("ok")), n.path("ready").asBoolean(),
                JobStatus.fromWire(n.path("status").asText()), n.path("auto-finalize").asBoolean(true),
                n.path("auto-dismiss").asBoolean(true), n.hasNonNull("error") ? n.get("error").asText() : null);
    }
}
