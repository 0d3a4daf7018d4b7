package jblockd.nbd.server;

import java.util.concurrent.Executor;
import java.util.concurrent.SynchronousQueue;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Where NBD request handlers run: on one of a few warm platform threads when one is idle, else
 * on the thread of the connection that read the request, which then reads no further request of
 * its client until this one is answered. While block I/O waits on the device the pool grows
 * (see {@link #observe}).
 *
 * <p>Why not a virtual thread for every request, as elsewhere: a handler's file I/O on a virtual
 * thread makes the scheduler compensate (it may wake or start another carrier for the duration
 * of each pread/pwrite): more wake-ups on every request. On this project's 2-CPU test machine
 * nbdcopy writing 1 GiB over two connections ran level with qemu-nbd with virtual handlers and
 * 1.1-1.25x ahead with this executor (and a platform thread reading each connection).
 *
 * <p>Why the connection's own thread when all warm threads are busy: that is backpressure on the
 * one client that has work waiting. Handing the overflow to new threads instead (virtual ones
 * were tried) lets dozens of reads copy into cold buffers and queue for the socket at once; on
 * nbdcopy's single-connection read that cost a quarter or more extra server CPU per GiB over
 * qemu-nbd, and the read ran level with it instead of ahead.
 *
 * <p>Why not a fixed pool with a queue: a handler may block for as long as its client does not
 * read its reply, or while the guest is stopped. Nothing ever waits here for a warm thread, so
 * clients that stall warm threads slow the others to one request at a time per connection but
 * delay nobody. After {@link #close()} requests run on virtual threads of their own.
 */
final class RequestExecutor implements Executor, AutoCloseable {
    /** Threads while storage waits (QEMU's thread pool has at most 64 workers). */
    static final int STORAGE_THREADS = 64;
    /** Block I/O below this, plus {@link #FAST_NANOS_PER_BYTE} per byte, is a cache hit. */
    private static final long FAST_NANOS = 20_000;
    private static final double FAST_NANOS_PER_BYTE = 0.5; // 2 GB/s, a memory copy
    private final ThreadPoolExecutor warm;
    private final int warmThreads;
    /** Share of recent requests that waited on storage, in 1/1024ths (a moving average). */
    private final AtomicInteger slowShare = new AtomicInteger();

    RequestExecutor(int warmThreads) {
        this.warmThreads = warmThreads;
        warm = new ThreadPoolExecutor(warmThreads, warmThreads, 30, TimeUnit.SECONDS, new SynchronousQueue<>(),
                Thread.ofPlatform().daemon().name("nbd-io-", 0).factory(), (task, pool) -> {
                    if (pool.isShutdown()) {
                        Thread.ofVirtual().name("nbd-req").start(task);
                    } else {
                        task.run();
                    }
                });
        warm.allowCoreThreadTimeOut(true); // an idle server keeps no threads
    }

    /** Runs {@code task} on an idle warm thread, else here and now. */
    @Override
    public void execute(Runnable task) {
        warm.execute(task);
    }

    /**
     * Reports how long a request's block I/O took. Requests served from the page cache gain
     * nothing from running side by side, only hand-offs; requests that wait on the device gain
     * from as many in flight as the client sends (fio's cold 4 KiB random reads stopped at
     * about 4 in flight with a pool of one thread per CPU, where qemu-nbd went on to 16 and
     * more). So while most recent requests waited, the pool may grow to
     * {@link #STORAGE_THREADS}; once they stop waiting it shrinks back. Requests held by a
     * stopped guest count as slow too, which only lets them wait on threads of their own.
     */
    void observe(long nanos, long bytes) {
        int target = nanos > FAST_NANOS + (long) (bytes * FAST_NANOS_PER_BYTE) ? 1024 : 0;
        int share;
        int next;
        do { // a CAS loop rather than updateAndGet: no lambda to allocate on every request
            share = slowShare.get();
            next = share + ((target - share) >> 4);
        } while (!slowShare.compareAndSet(share, next));
        if (poolSize(next) != warm.getMaximumPoolSize()) {
            resize();
        }
    }

    /** The pool size a slow share calls for; between the two thresholds, the current one. */
    private int poolSize(int share) {
        return share > 512 ? STORAGE_THREADS : share < 256 ? warmThreads : warm.getMaximumPoolSize();
    }

    /** Rare; serialised so that a grow and a shrink racing cannot leave the size stale. */
    private synchronized void resize() {
        int size = poolSize(slowShare.get());
        if (size != warm.getMaximumPoolSize()) {
            warm.setMaximumPoolSize(size);
        }
    }

    /** Lets the warm threads end once idle; later requests get virtual threads. */
    @Override
    public void close() {
        warm.shutdown();
    }
}
