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
                           boolean autoFinalize, boolean autoDismiss, String error, CbwBuffer cbwBuffer) {

    /**
     * jblockd's {@code x-cbw-buffer} of a backup (absent from QEMU and from backups without one):
     * the save buffer's bound and bytes held, and the guest writes saved in it or copied
     * synchronously because it was full.
     */
    public record CbwBuffer(long size, long used, long saves, long fallbacks) {
        static CbwBuffer from(JsonNode n) {
            return n.isObject() ? new CbwBuffer(n.path("size").asLong(), n.path("used").asLong(),
                    n.path("saves").asLong(), n.path("fallbacks").asLong()) : null;
        }
    }

    static BlockJobInfo from(JsonNode n) {
        return new BlockJobInfo(JobType.fromWire(n.path("type").asText()), n.path("device").asText(),
                n.path("len").asLong(), n.path("offset").asLong(), n.path("busy").asBoolean(),
                n.path("paused").asBoolean(), n.path("speed").asLong(),
                IoStatus.fromWire(n.path("io-status").asText("ok")), n.path("ready").asBoolean(),
                JobStatus.fromWire(n.path("status").asText()), n.path("auto-finalize").asBoolean(true),
                n.path("auto-dismiss").asBoolean(true), n.hasNonNull("error") ? n.get("error").asText() : null,
                CbwBuffer.from(n.path("x-cbw-buffer")));
    }
}
