package jblockd.client;

import java.nio.file.Path;

/**
 * A running QMP server the client tests talk to: real QEMU 7.2 ({@link QemuPeer}) or jblockd.
 * It has one raw device {@code drive0} over the image it was started with.
 */
public interface QmpPeer extends AutoCloseable {

    /** The UNIX socket of its QMP server. */
    Path socket();

    /**
     * A socket for a second client at the same time (QEMU's -qmp serves one client per socket;
     * jblockd's serves many, so it may be the same).
     */
    default Path secondSocket() {
        return socket();
    }

    /** Whether the peer offers a command (jblockd grows command by command). */
    default boolean supports(String command) {
        return true;
    }

    /** True for QEMU itself (where jblockd's seed rules, e.g. DeviceNotFound, do not hold). */
    boolean isQemu();

    @Override
    void close();
}
