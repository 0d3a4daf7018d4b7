package jblockd.nbd.server;

import java.util.concurrent.Executor;
import java.util.concurrent.SynchronousQueue;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;

/**
 * Where NBD request handlers run: a few warm platform threads, and a new virtual thread for a
 * request that finds none of them idle.
 *
 * <p>Why not a virtual thread for every request, as elsewhere: a handler's file I/O on a virtual
 * thread makes the scheduler compensate (it may wake or start another carrier for the duration
 * of each pread/pwrite), which on a small machine costs about as much as the copy itself. On
 * this project's 2-CPU test machine, nbdcopy writing 1 GiB over two connections ran 0.95-0.98x
 * qemu-nbd's speed with virtual handlers and 1.01-1.11x with warm platform threads (and a
 * platform thread reading each connection, see {@link NbdServer}).
 *
 * <p>Why not a fixed pool with a queue: a handler may block for as long as its client does not
 * read its reply, or while the guest is stopped. The warm threads therefore never queue work:
 * when all are busy (or blocked), the request gets its own virtual thread, so a stalled client
 * can delay nobody else. After {@link #close()} every request gets a virtual thread.
 */
final class RequestExecutor implements Executor, AutoCloseable {
    private final ThreadPoolExecutor warm;

    RequestExecutor(int warmThreads) {
        warm = new ThreadPoolExecutor(warmThreads, warmThreads, 30, TimeUnit.SECONDS, new SynchronousQueue<>(),
                Thread.ofPlatform().daemon().name("nbd-io-", 0).factory(),
                (task, pool) -> Thread.ofVirtual().name("nbd-req").start(task));
        warm.allowCoreThreadTimeOut(true); // an idle server keeps no threads
    }

    @Override
    public void execute(Runnable task) {
        warm.execute(task);
    }

    /** Lets the warm threads end once idle; requests still arriving get virtual threads. */
    @Override
    public void close() {
        warm.shutdown();
    }
}
