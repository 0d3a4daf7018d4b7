package jblockd.client;

import jblockd.qapi.ErrorClass;

/** Error class {@code CommandNotFound}: an unknown command, or a command before capability negotiation. */
public final class CommandNotFoundException extends QmpException {
    private static final long serialVersionUID = 1L;

    public CommandNotFoundException(String desc, String command) {
        super(ErrorClass.COMMAND_NOT_FOUND, ErrorClass.COMMAND_NOT_FOUND.wire(), desc, command);
    }
}
