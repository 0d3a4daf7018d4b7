package jblockd.job.commit;

import jblockd.block.BlockNode;
import jblockd.block.BlockStatus;
import jblockd.block.IoError;
import jblockd.job.JobContext;
import jblockd.job.mirror.Chain;
import jblockd.job.mirror.ChainCopyJob;
import jblockd.qapi.BlockdevOnError;
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
 * The data is written into the {@code base} node itself, which the command made writable for
 * the job (QEMU's bdrv_reopen_set_read_only()), so every reader of that node sees it.
 */
public final class CommitJob extends ChainCopyJob {
    /** QEMU commit.c COMMIT_BUFFER_SIZE (observed len = virtual size, 512 KiB steps). */
    public static final int CHUNK = 512 * 1024;

    /** {@code actions.rebase()} is commit_prepare(): the overlay of top is rebased onto base. */
    public CommitJob(BlockNode top, BlockNode base, BlockdevOnError onError, GraphActions actions) {
        super(JobType.COMMIT, top, base, onError, actions);
    }

    @Override
    public void run(JobContext ctx) throws Exception {
        long size = top.length();
        ctx.setLen(size);
        if (base.length() < size && !base.capabilities().growable()) {
            throw new IoError(jblockd.block.Errno.ENOSPC, "base is smaller than top");
        }
        // commit_run(): ignore and stop both retry the chunk ("n = 0; continue")
        copyChunks(ctx, size, CHUNK, OnIgnore.RETRY, (off, n, buf) -> copyChunk(off, n, top, base, buf,
                (pos, end) -> BlockStatus.above(top, base, pos, end - pos)));
        base.flush();
    }
}
