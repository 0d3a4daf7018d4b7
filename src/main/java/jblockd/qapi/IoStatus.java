package jblockd.qapi;

/** BlockDeviceIoStatus (qapi/block-core.json). */
public enum IoStatus implements WireEnum {
    OK("ok"),
    FAILED("failed"),
    NOSPACE("nospace");

    private final String wire;

    IoStatus(String wire) {
        this.wire = wire;
    }

    @Override
    public String wire() {
        return wire;
    }

    /** The constant for a wire string, or null when there is none. */
    public static IoStatus fromWire(String s) {
        return WireEnum.lookup(values(), s);
    }
}
