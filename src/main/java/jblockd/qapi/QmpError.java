package jblockd.qapi;

/**
 * A QMP command failure: QEMU's error class plus the human {@code desc}. Thrown by command
 * handlers; the QMP layer turns it into {@code {"error": {"class", "desc"}}}.
 */
public class QmpError extends Exception {
    private static final long serialVersionUID = 1L;
    private final ErrorClass errorClass;

    public QmpError(ErrorClass errorClass, String desc) {
        super(desc);
        this.errorClass = errorClass;
    }

    public static QmpError generic(String desc) {
        return new QmpError(ErrorClass.GENERIC_ERROR, desc);
    }

    public ErrorClass errorClass() {
        return errorClass;
    }

    public String desc() {
        return getMessage();
    }
}
