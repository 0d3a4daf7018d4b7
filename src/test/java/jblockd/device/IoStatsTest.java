package jblockd.device;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.concurrent.atomic.AtomicLong;

import org.junit.jupiter.api.Test;

/** block/accounting.c's rules, on a clock the test moves. */
class IoStatsTest {
    private final AtomicLong now = new AtomicLong(1000);

    @Test
    void doneCountsBytesOpsAndLatency() {
        IoStats s = new IoStats(now::get, true, true);
        assertThat(s.idleTimeNs()).isEmpty();
        IoStats.Cookie c = s.start(IoStats.Type.WRITE, 4096);
        now.addAndGet(250);
        s.done(c);
        now.addAndGet(40);
        assertThat(s.snapshot(IoStats.Type.WRITE)).isEqualTo(new IoStats.Snapshot(4096, 1, 0, 0, 250));
        assertThat(s.snapshot(IoStats.Type.READ)).isEqualTo(new IoStats.Snapshot(0, 0, 0, 0, 0));
        assertThat(s.idleTimeNs()).hasValue(40);
    }

    @Test
    void failedCountsNoBytesAndLatencyOnlyWithAccountFailed() {
        IoStats on = new IoStats(now::get, true, true);
        IoStats off = new IoStats(now::get, false, false);
        IoStats.Cookie a = on.start(IoStats.Type.READ, 512);
        IoStats.Cookie b = off.start(IoStats.Type.READ, 512);
        now.addAndGet(10);
        on.failed(a);
        off.failed(b);
        assertThat(on.snapshot(IoStats.Type.READ)).isEqualTo(new IoStats.Snapshot(0, 0, 1, 0, 10));
        assertThat(off.snapshot(IoStats.Type.READ)).isEqualTo(new IoStats.Snapshot(0, 0, 1, 0, 0));
        assertThat(on.idleTimeNs()).hasValue(0);
        assertThat(off.idleTimeNs()).isEmpty();
    }

    @Test
    void invalidCountsAtSubmissionWithoutLatency() {
        IoStats s = new IoStats(now::get, true, false);
        s.invalid(IoStats.Type.UNMAP);
        now.addAndGet(5);
        assertThat(s.snapshot(IoStats.Type.UNMAP)).isEqualTo(new IoStats.Snapshot(0, 0, 0, 1, 0));
        assertThat(s.idleTimeNs()).hasValue(5);
        IoStats quiet = new IoStats(now::get, false, false);
        quiet.invalid(IoStats.Type.FLUSH);
        assertThat(quiet.idleTimeNs()).isEmpty();
    }
}
