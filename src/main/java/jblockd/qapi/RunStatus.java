package jblockd.qapi;

/** RunState (qapi/run-state.json), the values jblockd uses. */
public enum RunStatus implements WireEnum {
    RUNNING("running"),
    PAUSED("paused"),
    IO_ERROR("io-error"),
    SHUTDOWN("shutdown");

    private final String wire;

    RunStatus(String wire) {
        this.wire = wire;
    }

    @Override
    public String wire() {
        return wire;
    }

    /** The constant for a wire string, or null when there is none. */
    public static RunStatus fromWire(String s) {
        return WireEnum.lookup(values(), s);
    }
}
