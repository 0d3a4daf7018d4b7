package jblockd.block;

import java.util.concurrent.atomic.AtomicReference;

/**
 * A node's write threshold (QEMU block/write-threshold.c, block-set-write-threshold): the first
 * write, zero write or discard reaching the node that ends past the threshold fires once and
 * disarms it. Management tools set it on thin-provisioned volumes to grow them in time.
 * <p>
 * The threshold is unsigned as in QEMU (a uint64: -1 never fires); 0 means none. Checked before
 * the request reaches the driver, as QEMU's bdrv_co_write_req_prepare() does. Thread-safe; one
 * volatile read on every write while nothing is armed.
 */
public final class WriteThreshold {
    /** Told once when a request ended past the threshold. */
    public interface Listener {
        void exceeded(long amountExceeded, long threshold);
    }

    private record Armed(long threshold, Listener listener) {
    }

    private final AtomicReference<Armed> armed = new AtomicReference<>();

    /** Arms {@code threshold} (0 disarms), replacing any earlier one. */
    public void set(long threshold, Listener listener) {
        armed.set(threshold == 0 ? null : new Armed(threshold, listener));
    }

    /** The armed threshold, 0 when none (query's {@code write_threshold}). */
    public long threshold() {
        Armed a = armed.get();
        return a == null ? 0 : a.threshold();
    }

    /** A request to {@code [offset, offset+length)} is about to change the node. */
    void check(long offset, long length) {
        Armed a = armed.get();
        if (a == null || length <= 0) {
            return;
        }
        long end = offset + length;
        if (Long.compareUnsigned(end, a.threshold()) > 0 && armed.compareAndSet(a, null)) {
            a.listener().exceeded(end - a.threshold(), a.threshold());
        }
    }
}
