package jblockd.qapi;

/** IoOperationType (qapi/block-core.json). */
public enum IoOperation implements WireEnum {
    READ("read"),
    WRITE("write");

    private final String wire;

    IoOperation(String wire) {
        this.wire = wire;
    }

    @Override
    public String wire() {
        return wire;
    }

    /** The constant for a wire string, or null when there is none. */
    public static IoOperation fromWire(String s) {
        return WireEnum.lookup(values(), s);
    }
}
