package jblockd.job;

import java.util.concurrent.ExecutorService;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;

/**
 * The threads a job's copy operations run on (backup's chunk copies, mirror's operations): up to
 * {@code threads} platform threads, started as copies need them and ended a few seconds after
 * they stop (QEMU runs the same work as coroutines whose file I/O goes to its thread pool of up
 * to 64 threads).
 *
 * <p>Why platform threads and not a virtual thread per copy, as everywhere else: a copy is
 * nothing but blocking file I/O, and a pread/pwrite on a virtual thread pins its carrier. The
 * scheduler's compensation for that does not keep up with short device waits: measured on the
 * 2-CPU test machine, a scattered incremental backup (3,277 cold 64 KiB reads) ran its I/O on
 * the two carriers only, whatever the number of copies in flight, and took 1.5x QEMU's time.
 *
 * <p>The caller bounds the copies it submits (the job's worker count); the queue never holds
 * more than that beyond the running ones. {@link #close()} waits for every submitted copy.
 */
public final class CopyWorkers {
    private static final long IDLE_SECONDS = 5;

    private CopyWorkers() {
    }

    /**
     * An executor of at most {@code threads} platform threads named {@code name-N}; a copy
     * submitted while all are busy waits in its queue.
     */
    public static ExecutorService start(String name, int threads) {
        ThreadPoolExecutor pool = new ThreadPoolExecutor(threads, threads, IDLE_SECONDS, TimeUnit.SECONDS,
                new LinkedBlockingQueue<>(), Thread.ofPlatform().daemon().name(name + "-", 0).factory());
        pool.allowCoreThreadTimeOut(true);
        return pool;
    }
}
