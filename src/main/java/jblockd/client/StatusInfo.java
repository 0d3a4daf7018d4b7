package jblockd.client;

import jblockd.qapi.RunStatus;

/**
 * {@code query-status}: the run state. {@code status} is null when the daemon reports a state
 * jblockd does not model (QEMU has more, e.g. {@code prelaunch}); {@code wire} always holds the text.
 */
public record StatusInfo(RunStatus status, String wire, boolean running) {
}
