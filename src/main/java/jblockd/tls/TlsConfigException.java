package jblockd.tls;

/** Credentials that cannot be loaded or used; the message is the user-facing text. */
public final class TlsConfigException extends Exception {
    private static final long serialVersionUID = 1L;

    public TlsConfigException(String message) {
        super(message);
    }
}
