package jblockd.client;

import jblockd.qapi.ErrorClass;

/** Error class {@code DeviceNotActive}: a `block-job-*` command naming a job that does not exist. */
public final class DeviceNotActiveException extends QmpException {
    private static final long serialVersionUID = 1L;

    public DeviceNotActiveException(String desc, String command) {
        super(ErrorClass.DEVICE_NOT_ACTIVE, ErrorClass.DEVICE_NOT_ACTIVE.wire(), desc, command);
    }
}
