package jblockd.block.bitmap;

/**
 * A refused bitmap operation; the message is QEMU 7.2's text (block/dirty-bitmap.c,
 * block/monitor/bitmap-qmp-cmds.c), which the QMP commands return as a GenericError as is.
 */
public final class BitmapException extends Exception {
    public BitmapException(String message) {
        super(message);
    }

    public BitmapException(String message, Throwable cause) {
        super(message, cause);
    }
}
