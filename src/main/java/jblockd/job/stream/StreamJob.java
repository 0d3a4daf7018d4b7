package jblockd.job.stream;

import java.io.IOException;
import java.nio.ByteBuffer;

import jblockd.block.Allocation;
import jblockd.block.BlockNode;
import jblockd.block.Extent;
import jblockd.block.IoError;
import jblockd.job.JobContext;
import jblockd.job.JobDriver;
import jblockd.job.mirror.Chain;
import jblockd.job.mirror.RangeLocks;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.ErrorAction;
import jblockd.qapi.IoOperation;
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
public final class StreamJob implements JobDriver {
    /** QEMU stream.c STREAM_CHUNK (observed error-paused offset 524288). */
    public static final int CHUNK = 512 * 1024;

    /** What the end of the job does to the graph; provided by the command. */
    public interface GraphActions {
        /** Rebase the top onto base (or drop its backing); may fail the job. */
        void rebase() throws Exception;

        /** Remove the filter, release dropped layers; must not throw. */
        void release(boolean rebased);
    }

    private final BlockNode top;
    private final BlockNode base;
    private final BlockdevOnError onError;
    private final RangeLocks locks;
    private final GraphActions actions;
    private volatile boolean rebased;

    public StreamJob(BlockNode top, BlockNode base, BlockdevOnError onError, RangeLocks locks,
                     GraphActions actions) {
        this.top = top;
        this.base = base;
        this.onError = onError;
        this.locks = locks;
        this.actions = actions;
    }

    @Override
    public JobType type() {
        return JobType.STREAM;
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
        ByteBuffer buf = ByteBuffer.allocateDirect(CHUNK);
        for (long off = 0; off < size; off += CHUNK) {
            ctx.pausePoint();
            long n = Math.min(CHUNK, size - off);
            while (true) {
                ChunkError failed = null;
                long copied = 0;
                locks.lock(off, n);
                try {
                    copied = copyChunk(off, n, buf);
                } catch (ChunkError ce) {
                    failed = ce;
                } finally {
                    locks.unlock(off, n);
                }
                if (failed == null) {
                    ctx.addOffset(n);
                    if (copied > 0) {
                        // stream_run() charges only what it copied against the speed
                        ctx.rateLimit(copied);
                    }
                    break;
                }
                ErrorAction a = ctx.handleError(onError, failed.op, failed.error, off);
                if (a == ErrorAction.IGNORE) {
                    // seed 000: the job goes on but completes with the error, backing kept
                    ctx.recordIgnoredError(failed.error);
                    ctx.addOffset(n);
                    break;
                }
                // STOP: resumed, copy the chunk again
            }
        }
    }

    private static final class ChunkError extends Exception {
        private static final long serialVersionUID = 1L;
        final transient IoOperation op;
        final IoError error;

        ChunkError(IoOperation op, IoError error) {
            super(error.getMessage(), error, false, false);
            this.op = op;
            this.error = error;
        }
    }

    /** Copies what the chunk needs from the chain into the top; caller holds the chunk lock. */
    private long copyChunk(long off, long n, ByteBuffer buf) throws ChunkError {
        long copied = 0;
        long pos = off;
        long end = off + n;
        BlockNode below = top.driver().backing();
        while (pos < end) {
            Extent inTop;
            Extent inChain;
            try {
                inTop = top.status(pos, end - pos);
                if (inTop.allocation() != Allocation.UNALLOCATED) {
                    pos = inTop.end();
                    continue;
                }
                inChain = Chain.statusAbove(below, base, pos, inTop.length());
            } catch (IOException e) {
                throw new ChunkError(IoOperation.READ, IoError.wrap(e));
            }
            int len = (int) inChain.length();
            if (inChain.allocation() == Allocation.DATA) {
                buf.clear().limit(len);
                try {
                    top.read(pos, buf);
                } catch (IOException e) {
                    throw new ChunkError(IoOperation.READ, IoError.wrap(e));
                }
                buf.flip();
                try {
                    top.write(pos, buf, false);
                } catch (IOException e) {
                    throw new ChunkError(IoOperation.WRITE, IoError.wrap(e));
                }
                copied += len;
            } else if (inChain.allocation() == Allocation.ZERO) {
                try {
                    top.writeZeroes(pos, len, false);
                } catch (IOException e) {
                    throw new ChunkError(IoOperation.WRITE, IoError.wrap(e));
                }
                copied += len;
            }
            pos += len;
        }
        return copied;
    }

    /** stream_prepare(): the rebase may still fail the job. */
    @Override
    public void prepare() throws Exception {
        actions.rebase();
        rebased = true;
    }

    @Override
    public void clean() {
        actions.release(rebased);
    }
}
