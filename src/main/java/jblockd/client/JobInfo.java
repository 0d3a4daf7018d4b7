package jblockd.client;

import com.fasterxml.jackson.databind.JsonNode;
import jblockd.qapi.JobStatus;
import jblockd.qapi.JobType;

/** One entry of {@code query-jobs} (JobInfo, reference/jobs.md §7). */
public record JobInfo(String id, JobType type, JobStatus status, long currentProgress, long totalProgress,
                      String error) {
    static JobInfo from(JsonNode n) {
        return new JobInfo(n.path("id").asText(), JobType.fromWire(n.path("type").asText()),
                JobStatus.fromWire(n.path("status").asText()), n.path("current-progress").asLong(),
                n.path("total-progress").asLong(), n.hasNonNull("error") ? n.get("error").asText() : null);
    }
}
