package jblockd.qapi;

/** BlockErrorAction (qapi/block-core.json): the resolved action reported in events. */
public enum ErrorAction implements WireEnum {
    IGNORE("ignore"),
    REPORT("report"),
    STOP("stop");

    private final String wire;

    ErrorAction(String wire) {
        this.wire = wire;
    }

    @Override
    public String wire() {
        return wire;
    }

    /** The constant for a wire string, or null when there is none. */
    public static ErrorAction fromWire(String s) {
        return WireEnum.lookup(values(), s);
    }
}
