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

    /** The constant for a wire string, or null when there is none. */
    public static JobType fromWire(String s) {
        return WireEnum.lookup(values(), s);
    }
}
