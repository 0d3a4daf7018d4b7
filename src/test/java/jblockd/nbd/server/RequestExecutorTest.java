package jblockd.nbd.server;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;

import org.junit.jupiter.api.Test;

/**
 * Where requests run: an idle warm thread, else the caller; while block I/O waits on storage the
 * pool grows so requests run side by side, and it shrinks back once I/O is fast again.
 */
class RequestExecutorTest {
    private static final long FAST = 1_000; // 1 µs for 4 KiB: a page-cache hit
    private static final long SLOW = 2_000_000; // 2 ms: the device

    /** Runs a task that records its thread; returns that thread once the task ran. */
    private static Thread ranOn(RequestExecutor e) throws InterruptedException {
        AtomicReference<Thread> t = new AtomicReference<>();
        CountDownLatch ran = new CountDownLatch(1);
        e.execute(() -> {
            t.set(Thread.currentThread());
            ran.countDown();
        });
        assertThat(ran.await(10, TimeUnit.SECONDS)).isTrue();
        return t.get();
    }

    private static void observe(RequestExecutor e, long nanos) {
        for (int i = 0; i < 200; i++) {
            e.observe(nanos, 4096);
        }
    }

    @Test
    void busyWarmThreadsMeanTheCallerRunsUntilStorageIsSlowThenThePoolGrowsAndShrinksBack() throws Exception {
        try (RequestExecutor e = new RequestExecutor(1)) {
            CountDownLatch release = new CountDownLatch(1);
            CountDownLatch busy = new CountDownLatch(1);
            e.execute(() -> {
                busy.countDown();
                try {
                    release.await();
                } catch (InterruptedException ignored) {
                    Thread.currentThread().interrupt();
                }
            });
            assertThat(busy.await(10, TimeUnit.SECONDS)).isTrue();
            try {
                observe(e, FAST);
                assertThat(ranOn(e)).as("the only warm thread is busy: the caller runs it")
                        .isSameAs(Thread.currentThread());

                observe(e, SLOW);
                Thread grown = ranOn(e);
                assertThat(grown).as("storage is slow: a new pool thread runs it").isNotSameAs(Thread.currentThread());
                assertThat(grown.isVirtual()).isFalse();

                observe(e, FAST);
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
                Thread t;
                do { // the extra thread ends once it notices the smaller pool
                    t = ranOn(e);
                } while (t != Thread.currentThread() && System.nanoTime() < deadline);
                assertThat(t).as("fast again: back to the caller").isSameAs(Thread.currentThread());
            } finally {
                release.countDown();
            }
        }
    }

    @Test
    void afterCloseRequestsGetVirtualThreads() throws Exception {
        RequestExecutor e = new RequestExecutor(1);
        e.close();
        Thread t = ranOn(e);
        assertThat(t).isNotSameAs(Thread.currentThread());
        assertThat(t.isVirtual()).isTrue();
    }
}
