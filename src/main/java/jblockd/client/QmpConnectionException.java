package jblockd.client;

/**
 * The QMP connection failed or was closed (by either side) while a command or a job was
 * waiting: there is no answer, so there is no error class. Also thrown when the waiting
 * thread is interrupted (its interrupt flag is set again first).
 */
public class QmpConnectionException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public QmpConnectionException(String message) {
        super(message);
    }

    public QmpConnectionException(String message, Throwable cause) {
        super(message, cause);
    }
}
