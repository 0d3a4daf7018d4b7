package jblockd.qapi;

/** MirrorSyncMode (qapi/block-core.json). */
public enum MirrorSyncMode implements WireEnum {
    TOP("top"),
    FULL("full"),
    NONE("none"),
    INCREMENTAL("incremental"),
    BITMAP("bitmap");

    private final String wire;

    MirrorSyncMode(String wire) {
        this.wire = wire;
    }

    @Override
    public String wire() {
        return wire;
    }

    /** The constant for a wire string, or null when there is none. */
    public static MirrorSyncMode fromWire(String s) {
        return WireEnum.lookup(values(), s);
    }
}
