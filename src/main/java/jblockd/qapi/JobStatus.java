package jblockd.qapi;

/** JobStatus (qapi/job.json). */
public enum JobStatus implements WireEnum {
    UNDEFINED("undefined"),
    CREATED("created"),
    RUNNING("running"),
    PAUSED("paused"),
    READY("ready"),
    STANDBY("standby"),
    WAITING("waiting"),
    PENDING("pending"),
    ABORTING("aborting"),
    CONCLUDED("concluded"),
    NULL("null");

    private final String wire;

    JobStatus(String wire) {
        this.wire = wire;
    }

    @Override
    public String wire() {
        return wire;
    }

    /** The constant for a wire string, or null when there is none. */
    public static JobStatus fromWire(String s) {
        return WireEnum.lookup(values(), s);
    }
}
