package jblockd.qapi;

/** BitmapSyncMode (qapi/block-core.json): what a backup does with its bitmap at the end. */
public enum BitmapSyncMode implements WireEnum {
    ON_SUCCESS("on-success"),
    NEVER("never"),
    ALWAYS("always");

    private final String wire;

    BitmapSyncMode(String wire) {
        this.wire = wire;
    }

    @Override
    public String wire() {
        return wire;
    }

    /** The constant for a wire string, or null when there is none. */
    public static BitmapSyncMode fromWire(String s) {
        return WireEnum.lookup(values(), s);
    }
}
