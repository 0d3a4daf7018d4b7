package jblockd.qapi;

/** JobType (qapi/job.json). */
public enum JobType implements WireEnum {
    COMMIT("commit"),
    STREAM("stream"),
    MIRROR("mirror"),
    BACKUP("backup"),
    CREATE("create"),
    AMEND("amend"),
    SNAPSHOT_LOAD("snapshot-load"),
    SNAPSHOT_SAVE("snapshot-save"),
    SNAPSHOT_DELETE("snapshot-delete");

    private final String wire;

    JobType(String wire) {
        this.wire = wire;
    }

    @Override
    public String wire() {
        return wire;
    }

    /**
     * True for the types QEMU runs as block jobs (BlockJob: backup, mirror, stream, commit). The
     * others (create, amend, snapshot-*) are plain jobs: query-block-jobs and the block-job-*
     * verbs do not see them and they emit no BLOCK_JOB_* events, only JOB_STATUS_CHANGE
     * (observed on qemu-storage-daemon 7.2 for blockdev-create).
     */
    public boolean blockJob() {
        return this == COMMIT || this == STREAM || this == MIRROR || this == BACKUP;
    }

    /** The constant for a wire string, or null when there is none. */
    public static JobType fromWire(String s) {
        return WireEnum.lookup(values(), s);
    }
}
