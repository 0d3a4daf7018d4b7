package jblockd.block;

import java.util.concurrent.atomic.LongAccumulator;
import java.util.concurrent.atomic.LongAdder;

/**
 * What QEMU counts per node rather than per BlockBackend (query-blockstats with
 * {@code query-nodes}): the end of the highest write ({@code bs->wr_highest_offset}, set by
 * bdrv_co_write_req_finish() for every write and write-zeroes that reaches the node, whatever
 * its result), and the discards passed to a file driver (file-posix's raw_account_discard(),
 * shown as {@code driver-specific}). Cheap: one accumulator or adder per request.
 */
public final class NodeStats {
    private final LongAccumulator wrHighestOffset = new LongAccumulator(Math::max, 0);
    private final LongAdder discardOk = new LongAdder();
    private final LongAdder discardFailed = new LongAdder();
    private final LongAdder discardBytesOk = new LongAdder();

    void wrote(long offset, long length) {
        if (length > 0) {
            wrHighestOffset.accumulate(offset + length);
        }
    }

    void discarded(long length, boolean ok) {
        if (ok) {
            discardOk.increment();
            discardBytesOk.add(length);
        } else {
            discardFailed.increment();
        }
    }

    public long wrHighestOffset() {
        return wrHighestOffset.get();
    }

    public long discardNbOk() {
        return discardOk.sum();
    }

    public long discardNbFailed() {
        return discardFailed.sum();
    }

    public long discardBytesOk() {
        return discardBytesOk.sum();
    }
}
