package jblockd.qapi;

/**
 * Every QMP event jblockd emits, one method each, with QEMU 7.2's data members
 * (../shared/reference/jobs.md §6, errors.md §4). The block layer, devices and jobs call these;
 * the QMP layer's fan-out implements it by queueing the event to every negotiated client.
 * Implementations never block the caller on a slow client.
 */
public interface QapiEvents {

    /** JOB_STATUS_CHANGE {status, id}. */
    void jobStatusChange(String id, JobStatus status);

    /** BLOCK_JOB_COMPLETED {type, device, len, offset, speed[, error]}; error null on success. */
    void blockJobCompleted(JobType type, String device, long len, long offset, long speed, String error);

    /** BLOCK_JOB_CANCELLED {type, device, len, offset, speed}. */
    void blockJobCancelled(JobType type, String device, long len, long offset, long speed);

    /** BLOCK_JOB_ERROR {device, operation, action}. */
    void blockJobError(String device, IoOperation operation, ErrorAction action);

    /** BLOCK_JOB_READY {type, device, len, offset, speed}. */
    void blockJobReady(JobType type, String device, long len, long offset, long speed);

    /** BLOCK_JOB_PENDING {type, id}. */
    void blockJobPending(JobType type, String id);

    /**
     * BLOCK_IO_ERROR {device, node-name, operation, action, [nospace], reason}; {@code nospace}
     * null leaves the member out (device without io-status tracking).
     */
    void blockIoError(String device, String nodeName, IoOperation operation, ErrorAction action,
                      Boolean nospace, String reason);

    /** STOP (no data). */
    void stop();

    /** RESUME (no data). */
    void resume();

    /** SHUTDOWN {guest, reason}. */
    void shutdown(boolean guest, String reason);

    /** BLOCK_EXPORT_DELETED {id}: the export is gone (block-export-del, nbd-server-stop). */
    void blockExportDeleted(String id);

    /** BLOCK_WRITE_THRESHOLD {node-name, amount-exceeded, write-threshold}. */
    void blockWriteThreshold(String nodeName, long amountExceeded, long writeThreshold);

    /** Discards every event: for tests and embedded use without a QMP server. */
    QapiEvents NONE = new QapiEvents() {
        public void jobStatusChange(String id, JobStatus status) { }
        public void blockJobCompleted(JobType t, String d, long l, long o, long s, String e) { }
        public void blockJobCancelled(JobType t, String d, long l, long o, long s) { }
        public void blockJobError(String d, IoOperation op, ErrorAction a) { }
        public void blockJobReady(JobType t, String d, long l, long o, long s) { }
        public void blockJobPending(JobType t, String id) { }
        public void blockIoError(String d, String n, IoOperation op, ErrorAction a, Boolean ns, String r) { }
        public void stop() { }
        public void resume() { }
        public void shutdown(boolean guest, String reason) { }
        public void blockExportDeleted(String id) { }
        public void blockWriteThreshold(String n, long a, long t) { }
    };
}
