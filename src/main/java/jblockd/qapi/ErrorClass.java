package jblockd.qapi;

/** QapiErrorClass (qapi/error.json). */
public enum ErrorClass implements WireEnum {
    GENERIC_ERROR("GenericError"),
    COMMAND_NOT_FOUND("CommandNotFound"),
    DEVICE_NOT_ACTIVE("DeviceNotActive"),
    DEVICE_NOT_FOUND("DeviceNotFound"),
    KVM_MISSING_CAP("KVMMissingCap");

    private final String wire;

    ErrorClass(String wire) {
        this.wire = wire;
    }

    @Override
    public String wire() {
        return wire;
    }

    /** The constant for a wire string, or null when there is none. */
    public static ErrorClass fromWire(String s) {
        return WireEnum.lookup(values(), s);
    }
}
