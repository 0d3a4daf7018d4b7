package jblockd.device;

import java.util.List;

/**
 * An open drained section over some devices (QEMU's bdrv_drained_begin .. bdrv_drained_end):
 * while it is open no guest request is in flight on them and new ones wait, so the graph under
 * them can change without a request seeing half of it. Made by {@link Devices#drain}; closing
 * it lets the held requests go on, on the graph as it is then. Close exactly once, from any
 * thread.
 */
public final class DrainedSection implements AutoCloseable {
    private final List<Device> devices;
    private boolean closed;

    DrainedSection(List<Device> devices) {
        this.devices = List.copyOf(devices);
        for (Device d : this.devices) {
            d.gate().drainBegin();
        }
    }

    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        for (Device d : devices) {
            d.gate().drainEnd();
        }
    }
}
