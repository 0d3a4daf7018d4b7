package jblockd.nbd.proto;

import java.io.IOException;

/** The peer broke the protocol (bad magic, impossible length): the connection must be dropped. */
public class NbdProtocolException extends IOException {
    private static final long serialVersionUID = 1L;

    public NbdProtocolException(String message) {
        super(message);
    }
}
