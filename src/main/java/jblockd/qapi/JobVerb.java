package jblockd.qapi;

/** JobVerb (qapi/job.json): the verbs of the job verb table. */
public enum JobVerb implements WireEnum {
    CANCEL("cancel"),
    PAUSE("pause"),
    RESUME("resume"),
    SET_SPEED("set-speed"),
    COMPLETE("complete"),
    DISMISS("dismiss"),
    FINALIZE("finalize"),
    CHANGE("change");

    private final String wire;

    JobVerb(String wire) {
        this.wire = wire;
    }

    @Override
    public String wire() {
        return wire;
    }

    /** The constant for a wire string, or null when there is none. */
    public static JobVerb fromWire(String s) {
        return WireEnum.lookup(values(), s);
    }
}
