package jblockd.device;

import java.util.EnumMap;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.LongAdder;
import java.util.function.LongSupplier;

/**
 * A device's I/O accounting (QEMU's BlockAcctStats, block/accounting.c): bytes, operations,
 * failed and invalid operations and total latency per request type, and the time of the last
 * access for {@code idle_time_ns}. Counted where guest I/O enters the device ({@link GuestIo});
 * each request costs a few {@link LongAdder} adds, so concurrent requests do not contend.
 * Times come from an injected monotonic nanosecond clock (QEMU: QEMU_CLOCK_REALTIME).
 */
public final class IoStats {

    /** QEMU's BlockAcctType (write-zeroes count as writes, as virtio-blk accounts them). */
    public enum Type { READ, WRITE, UNMAP, FLUSH }

    /** One request's start: QEMU's BlockAcctCookie. */
    public record Cookie(Type type, long bytes, long startNs) {
    }

    private static final class Counters {
        final LongAdder bytes = new LongAdder();
        final LongAdder ops = new LongAdder();
        final LongAdder failed = new LongAdder();
        final LongAdder invalid = new LongAdder();
        final LongAdder totalTimeNs = new LongAdder();
    }

    /** A point-in-time copy of one type's counters. */
    public record Snapshot(long bytes, long ops, long failed, long invalid, long totalTimeNs) {
    }

    private final LongSupplier clock;
    private final boolean accountInvalid;
    private final boolean accountFailed;
    private final Map<Type, Counters> counters = new EnumMap<>(Type.class);
    /** 0 until the first accounted access (QEMU then has no idle_time_ns). */
    private final AtomicLong lastAccessNs = new AtomicLong();

    /**
     * @param clock          monotonic nanoseconds; must never return 0 once I/O starts
     * @param accountInvalid QEMU's stats-account-invalid: invalid requests count as accesses
     * @param accountFailed  QEMU's stats-account-failed: failed requests add their latency and
     *                       count as accesses
     */
    public IoStats(LongSupplier clock, boolean accountInvalid, boolean accountFailed) {
        this.clock = Objects.requireNonNull(clock);
        this.accountInvalid = accountInvalid;
        this.accountFailed = accountFailed;
        for (Type t : Type.values()) {
            counters.put(t, new Counters());
        }
    }

    /** The system's monotonic clock, shifted so that it never reads 0 (0 means "no access"). */
    public static IoStats system(boolean accountInvalid, boolean accountFailed) {
        long origin = System.nanoTime() - 1;
        return new IoStats(() -> System.nanoTime() - origin, accountInvalid, accountFailed);
    }

    public Cookie start(Type type, long bytes) {
        return new Cookie(type, bytes, clock.getAsLong());
    }

    /** block_acct_done(). */
    public void done(Cookie c) {
        account(c, false);
    }

    /** block_acct_failed(). */
    public void failed(Cookie c) {
        account(c, true);
    }

    /** block_acct_invalid(): counted at submission, no latency. */
    public void invalid(Type type) {
        counters.get(type).invalid.increment();
        if (accountInvalid) {
            lastAccessNs.set(clock.getAsLong());
        }
    }

    private void account(Cookie c, boolean failed) {
        Counters k = counters.get(c.type());
        long now = clock.getAsLong();
        if (failed) {
            k.failed.increment();
        } else {
            k.bytes.add(c.bytes());
            k.ops.increment();
        }
        if (!failed || accountFailed) {
            k.totalTimeNs.add(now - c.startNs());
            lastAccessNs.set(now);
        }
    }

    public Snapshot snapshot(Type type) {
        Counters k = counters.get(type);
        return new Snapshot(k.bytes.sum(), k.ops.sum(), k.failed.sum(), k.invalid.sum(), k.totalTimeNs.sum());
    }

    /** block_acct_idle_time_ns(); empty before the first access. */
    public java.util.OptionalLong idleTimeNs() {
        long last = lastAccessNs.get();
        return last > 0 ? java.util.OptionalLong.of(clock.getAsLong() - last) : java.util.OptionalLong.empty();
    }

    public boolean accountInvalid() {
        return accountInvalid;
    }

    public boolean accountFailed() {
        return accountFailed;
    }
}
