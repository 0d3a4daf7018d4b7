package jblockd.client;

import jblockd.qapi.ErrorClass;

/**
 * The daemon answered a command with {@code {"error": {"class", "desc"}}}. Programs branch on
 * {@link #errorClass()} (or on the subclasses for the classes that mean "no such thing"); the
 * {@link #desc()} is QEMU's human text and may change between versions.
 *
 * <p>Unchecked, so that commands compose with lambdas; connection failures are a different
 * type ({@link QmpConnectionException}) because they carry no error class.
 */
public class QmpException extends RuntimeException {
    private static final long serialVersionUID = 1L;
    private final ErrorClass errorClass;
    private final String wireClass;
    private final String command;
    private final String desc;

    public QmpException(ErrorClass errorClass, String wireClass, String desc, String command) {
        super(wireClass + ": " + desc);
        this.errorClass = errorClass;
        this.wireClass = wireClass;
        this.command = command;
        this.desc = desc;
    }

    /** The error class, {@link ErrorClass#GENERIC_ERROR} when the wire class is unknown to us. */
    public ErrorClass errorClass() {
        return errorClass;
    }

    /** The class exactly as the daemon spelled it, e.g. {@code "GenericError"}. */
    public String wireClass() {
        return wireClass;
    }

    /** QEMU's human-readable description. */
    public String desc() {
        return desc;
    }

    /** The command that failed. */
    public String command() {
        return command;
    }

    /** Builds the most specific exception type for an error class. */
    static QmpException of(String wireClass, String desc, String command) {
        ErrorClass ec = ErrorClass.fromWire(wireClass);
        if (ec == null) {
            return new QmpException(ErrorClass.GENERIC_ERROR, wireClass, desc, command);
        }
        return switch (ec) {
            case DEVICE_NOT_FOUND -> new DeviceNotFoundException(desc, command);
            case DEVICE_NOT_ACTIVE -> new DeviceNotActiveException(desc, command);
            case COMMAND_NOT_FOUND -> new CommandNotFoundException(desc, command);
            default -> new QmpException(ec, wireClass, desc, command);
        };
    }
}
