package jblockd.job.mirror;

import java.io.IOException;
import java.nio.ByteBuffer;

import jblockd.block.Allocation;
import jblockd.block.BlockNode;
import jblockd.block.Extent;
import jblockd.block.IoError;
import jblockd.job.JobContext;
import jblockd.job.JobDriver;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.ErrorAction;
import jblockd.qapi.IoOperation;
import jblockd.qapi.JobType;

/**
 * What block-stream and intermediate block-commit share (QEMU stream_run(), commit_run()): a
 * copy of part of a backing chain in fixed chunks, then a rebase that the command provides.
 * <p>
 * The chunk loop covers {@code [0, size)} with a pause point before each chunk; progress
 * advances by whole chunks, but only the bytes actually copied are charged against the speed
 * (both QEMU loops rate-limit on what they copied). A chunk whose copy failed goes through
 * {@code on-error}; after {@code stop} (resumed) it is copied again, and what {@code ignore}
 * does is where the two jobs differ ({@link OnIgnore}).
 * <p>
 * The rebase happens in {@link #prepare} (so it may still fail the job), and {@link #clean}
 * always lets the command release the graph, knowing whether the rebase happened.
 */
public abstract class ChainCopyJob implements JobDriver {

    /** What the end of the job does to the graph; provided by the command. */
    public interface GraphActions {
        /** Rebase (the top onto base, or the overlay of top onto base); may fail the job. */
        void rebase() throws Exception;

        /** Remove the filter, release the dropped layers or extra nodes; must not throw. */
        void release(boolean rebased);
    }

    /** What an {@code ignore}d chunk error does. */
    protected enum OnIgnore {
        /** stream_run() (seed 000): skip the chunk; the job goes on but ends with the error. */
        SKIP_CHUNK,
        /** commit_run(): "n = 0; continue" retries the chunk, just as after {@code stop}. */
        RETRY
    }

    /** Copies what one chunk needs; returns the bytes written (0: nothing to copy). */
    @FunctionalInterface
    protected interface Chunk {
        long copy(long off, long n, ByteBuffer buf) throws CopyError;
    }

    /** A failed read or write, with which of the two it was (the BLOCK_JOB_ERROR operation). */
    protected static final class CopyError extends Exception {
        private static final long serialVersionUID = 1L;
        private final transient IoOperation op;
        private final IoError error;

        public CopyError(IoOperation op, IOException cause) {
            this(op, IoError.wrap(cause));
        }

        private CopyError(IoOperation op, IoError error) {
            // only a carrier to the error policy: no stack trace needed
            super(error.getMessage(), error, false, false);
            this.op = op;
            this.error = error;
        }
    }

    private final JobType type;
    protected final BlockNode top;
    protected final BlockNode base;
    private final BlockdevOnError onError;
    private final GraphActions actions;
    private volatile boolean rebased;

    protected ChainCopyJob(JobType type, BlockNode top, BlockNode base, BlockdevOnError onError,
                           GraphActions actions) {
        this.type = type;
        this.top = top;
        this.base = base;
        this.onError = onError;
        this.actions = actions;
    }

    @Override
    public final JobType type() {
        return type;
    }

    /** Runs {@code chunk} over {@code [0, size)} in {@code chunkSize} pieces, see the class comment. */
    protected final void copyChunks(JobContext ctx, long size, int chunkSize, OnIgnore onIgnore, Chunk chunk)
            throws Exception {
        ByteBuffer buf = ByteBuffer.allocateDirect(chunkSize);
        for (long off = 0; off < size; off += chunkSize) {
            ctx.pausePoint();
            long n = Math.min(chunkSize, size - off);
            while (true) {
                long copied;
                try {
                    copied = chunk.copy(off, n, buf);
                } catch (CopyError failed) {
                    ErrorAction a = ctx.handleError(onError, failed.op, failed.error, off);
                    if (a == ErrorAction.IGNORE && onIgnore == OnIgnore.SKIP_CHUNK) {
                        ctx.recordIgnoredError(failed.error);
                        ctx.addOffset(n);
                        break;
                    }
                    // stop (resumed), or an ignore that retries: copy the chunk again; handleError
                    // backs off when it keeps failing (SPEC §7)
                    continue;
                }
                ctx.addOffset(n);
                if (copied > 0) {
                    ctx.rateLimit(copied);
                }
                break;
            }
        }
    }

    /** Where the chain says what to copy at {@code pos}; an UNALLOCATED extent is skipped. */
    @FunctionalInterface
    protected interface ToCopy {
        Extent at(long pos, long end) throws IOException;
    }

    /**
     * Copies the chunk {@code [off, off + n)} extent by extent as {@code toCopy} reports it,
     * reading through {@code from} and writing to {@code to}; a failed status lookup is a read
     * error. Returns the bytes written.
     */
    protected static long copyChunk(long off, long n, BlockNode from, BlockNode to, ByteBuffer buf, ToCopy toCopy)
            throws CopyError {
        long copied = 0;
        long pos = off;
        long end = off + n;
        while (pos < end) {
            Extent e;
            try {
                e = toCopy.at(pos, end);
            } catch (IOException ex) {
                throw new CopyError(IoOperation.READ, ex);
            }
            copied += copyRange(e.allocation(), pos, (int) e.length(), from, to, buf);
            pos += e.length();
        }
        return copied;
    }

    /**
     * Copies {@code len} bytes at {@code pos} as the chain reports them: data read through
     * {@code from} and written to {@code to}, zeroes written as zeroes (not unmapped, as both
     * QEMU jobs do), unallocated ranges left alone. Returns the bytes written.
     */
    private static long copyRange(Allocation allocation, long pos, int len, BlockNode from, BlockNode to,
                                    ByteBuffer buf) throws CopyError {
        if (allocation == Allocation.DATA) {
            buf.clear().limit(len);
            try {
                from.read(pos, buf);
            } catch (IOException e) {
                throw new CopyError(IoOperation.READ, e);
            }
            buf.flip();
            try {
                to.write(pos, buf, false);
            } catch (IOException e) {
                throw new CopyError(IoOperation.WRITE, e);
            }
            return len;
        }
        if (allocation == Allocation.ZERO) {
            try {
                to.writeZeroes(pos, len, false);
            } catch (IOException e) {
                throw new CopyError(IoOperation.WRITE, e);
            }
            return len;
        }
        return 0;
    }

    /** stream_prepare() / commit_prepare(): the rebase may still fail the job. */
    @Override
    public final void prepare() throws Exception {
        actions.rebase();
        rebased = true;
    }

    @Override
    public final void clean() {
        actions.release(rebased);
    }
}
