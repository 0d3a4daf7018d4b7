package jblockd.job.stream;

import java.nio.ByteBuffer;

import jblockd.block.Allocation;
import jblockd.block.BlockNode;
import jblockd.block.BlockStatus;
import jblockd.block.Extent;
import jblockd.job.JobContext;
import jblockd.job.mirror.Chain;
import jblockd.job.mirror.ChainCopyJob;
import jblockd.job.mirror.RangeLocks;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.JobType;

/**
 * block-stream (QEMU block/stream.c): copy-on-read of the backing chain into the top image, in
 * {@value #CHUNK}-byte chunks, then the top is rebased onto {@code base} (or loses its backing
 * file). For each chunk, every range not allocated in the top but allocated in a layer above
 * {@code base} is read through the chain and written into the top.
 * <p>
 * Guest writes are never overwritten with older backing data: the chunk is locked in the
 * {@link RangeLocks} that the device's filter also takes around every guest write, and the
 * top's allocation is looked at only under that lock, so a guest write either completed before
 * (the range is then allocated in the top and skipped) or waits until the chunk is done.
 * <p>
 * Errors go through {@code on-error}: reads of the chain report {@code read}, writes into the
 * top {@code write}. {@code ignore} skips the chunk and the job ends with the error, leaving the
 * backing file in place (seed 000); {@code stop} retries the chunk after resume.
 */
public final class StreamJob extends ChainCopyJob {
    /** QEMU stream.c STREAM_CHUNK (observed error-paused offset 524288). */
    public static final int CHUNK = 512 * 1024;

    private final RangeLocks locks;

    public StreamJob(BlockNode top, BlockNode base, BlockdevOnError onError, RangeLocks locks,
                     GraphActions actions) {
        super(JobType.STREAM, top, base, onError, actions);
        this.locks = locks;
    }

    @Override
    public void run(JobContext ctx) throws Exception {
        BlockNode below = top.driver().backing();
        if (below == null || below == base) {
            // stream_run(): "Nothing to stream" before the progress is even set (len stays 0)
            return;
        }
        long size = top.length();
        ctx.setLen(size);
        copyChunks(ctx, size, CHUNK, OnIgnore.SKIP_CHUNK, (off, n, buf) -> {
            locks.lock(off, n);
            try {
                return copyIntoTop(off, n, buf);
            } finally {
                locks.unlock(off, n);
            }
        });
    }

    /**
     * Copies what the chunk needs from the chain into the top; caller holds the chunk lock. The
     * top reads an unallocated range through its backing chain, so it is both source and target.
     */
    private long copyIntoTop(long off, long n, ByteBuffer buf) throws CopyError {
        BlockNode below = top.driver().backing();
        return copyChunk(off, n, top, top, buf, (pos, end) -> {
            Extent inTop = top.status(pos, end - pos);
            if (inTop.allocation() != Allocation.UNALLOCATED) {
                // already in the top (a guest write, or copied before): skip it
                return new Extent(pos, inTop.length(), Allocation.UNALLOCATED);
            }
            return BlockStatus.above(below, base, pos, inTop.length());
        });
    }
}
