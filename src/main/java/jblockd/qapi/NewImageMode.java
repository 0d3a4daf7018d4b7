package jblockd.qapi;

/** NewImageMode (qapi/block-core.json). */
public enum NewImageMode implements WireEnum {
    EXISTING("existing"),
    ABSOLUTE_PATHS("absolute-paths");

    private final String wire;

    NewImageMode(String wire) {
        this.wire = wire;
    }

    @Override
    public String wire() {
        return wire;
    }

    /** The constant for a wire string, or null when there is none. */
    public static NewImageMode fromWire(String s) {
        return WireEnum.lookup(values(), s);
    }
}
