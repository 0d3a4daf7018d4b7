package jblockd.qapi;

/** BlockdevOnError (qapi/block-core.json): a job's error option. */
public enum BlockdevOnError implements WireEnum {
    REPORT("report"),
    IGNORE("ignore"),
    ENOSPC("enospc"),
    STOP("stop"),
    AUTO("auto");

    private final String wire;

    BlockdevOnError(String wire) {
        this.wire = wire;
    }

    @Override
    public String wire() {
        return wire;
    }

    /** The constant for a wire string, or null when there is none. */
    public static BlockdevOnError fromWire(String s) {
        return WireEnum.lookup(values(), s);
    }
}
