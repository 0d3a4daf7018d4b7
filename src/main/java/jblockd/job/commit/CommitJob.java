package jblockd.job.commit;

import java.io.IOException;
import java.nio.ByteBuffer;

import jblockd.block.Allocation;
import jblockd.block.BlockNode;
import jblockd.block.Extent;
import jblockd.block.IoError;
import jblockd.job.JobContext;
import jblockd.job.JobDriver;
import jblockd.job.mirror.Chain;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.IoOperation;
import jblockd.qapi.JobType;

/**
 * Intermediate block-commit (QEMU block/commit.c): copies, in {@value #CHUNK}-byte units, every
 * range allocated in {@code top} or a layer between it and {@code base} into {@code base}; then
 * the overlay of {@code top} is rebased onto {@code base} and the committed layers leave the
 * chain. Guests write only to layers above {@code top}, so nothing they do races with the copy.
 * Committing the active layer is a {@link jblockd.job.mirror.MirrorJob} instead.
 * <p>
 * Errors go through {@code on-error} (reads of top..base: {@code read}, writes into base:
 * {@code write}); as in QEMU's commit_run(), {@code ignore} and {@code stop} both retry the chunk.
 * <p>
 * {@code baseWriter} is the node the data is written through: the base opened read-write (the
 * chain's own base node is read-only, as backing files are); its reads of committed ranges are
 * never needed by the chain while the job runs, since those are allocated above it.
 */
public final class CommitJob implements JobDriver {
    /** QEMU commit.c COMMIT_BUFFER_SIZE (observed len = virtual size, 512 KiB steps). */
    public static final int CHUNK = 512 * 1024;

    /** What the end of the job does to the graph; provided by the command. */
    public interface GraphActions {
        /** Rebase the overlay of top onto base; may fail the job. */
        void rebase() throws Exception;

        /** Release the dropped layers or the extra base node; must not throw. */
        void release(boolean rebased);
    }

    private final BlockNode top;
    private final BlockNode base;
    private final BlockNode baseWriter;
    private final BlockdevOnError onError;
    private final GraphActions actions;
    private volatile boolean rebased;

    public CommitJob(BlockNode top, BlockNode base, BlockNode baseWriter, BlockdevOnError onError,
                     GraphActions actions) {
        this.top = top;
        this.base = base;
        this.baseWriter = baseWriter;
        this.onError = onError;
        this.actions = actions;
    }

    @Override
    public JobType type() {
        return JobType.COMMIT;
    }

    @Override
    public void run(JobContext ctx) throws Exception {
        long size = top.length();
        ctx.setLen(size);
        if (baseWriter.length() < size && !baseWriter.capabilities().growable()) {
            throw new IoError(jblockd.block.Errno.ENOSPC, "base is smaller than top");
        }
        ByteBuffer buf = ByteBuffer.allocateDirect(CHUNK);
        for (long off = 0; off < size; off += CHUNK) {
            ctx.pausePoint();
            long n = Math.min(CHUNK, size - off);
            while (true) {
                IoOperation op = IoOperation.READ;
                long copied = 0;
                try {
                    long pos = off;
                    long end = off + n;
                    while (pos < end) {
                        op = IoOperation.READ;
                        Extent e = Chain.statusAbove(top, base, pos, end - pos);
                        int len = (int) e.length();
                        if (e.allocation() == Allocation.DATA) {
                            buf.clear().limit(len);
                            top.read(pos, buf);
                            buf.flip();
                            op = IoOperation.WRITE;
                            baseWriter.write(pos, buf, false);
                            copied += len;
                        } else if (e.allocation() == Allocation.ZERO) {
                            op = IoOperation.WRITE;
                            baseWriter.writeZeroes(pos, len, false);
                            copied += len;
                        }
                        pos += len;
                    }
                } catch (IOException e) {
                    // commit_run(): for both ignore and stop the chunk is tried again ("n = 0;
                    // continue"); handleError backs off when it keeps failing (SPEC §7).
                    ctx.handleError(onError, op, IoError.wrap(e), off);
                    continue;
                }
                ctx.addOffset(n);
                if (copied > 0) {
                    ctx.rateLimit(copied);
                }
                break;
            }
        }
        baseWriter.flush();
    }

    /** commit_prepare(): drop the committed layers from the chain. */
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
