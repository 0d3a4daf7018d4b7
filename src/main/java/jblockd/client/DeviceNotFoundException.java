package jblockd.client;

import jblockd.qapi.ErrorClass;

/** Error class {@code DeviceNotFound}: an unknown device or node (seed rule: drive-backup on an unknown device). */
public final class DeviceNotFoundException extends QmpException {
    private static final long serialVersionUID = 1L;

    public DeviceNotFoundException(String desc, String command) {
        super(ErrorClass.DEVICE_NOT_FOUND, ErrorClass.DEVICE_NOT_FOUND.wire(), desc, command);
    }
}
