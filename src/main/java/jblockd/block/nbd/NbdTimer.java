package jblockd.block.nbd;

/**
 * Time for the nbd driver's retries and its reconnect window, injected so unit tests step it
 * by hand instead of sleeping. Implementations are thread-safe.
 */
public interface NbdTimer {
    /** A monotonic clock in nanoseconds. */
    long nanoTime();

    /** Runs {@code task} once, on some thread, {@code delayNanos} from now, unless cancelled. */
    Scheduled schedule(long delayNanos, Runnable task);

    /** A task not yet run. */
    interface Scheduled {
        void cancel();
    }

    /** Wall time: {@link System#nanoTime()}, each task on a virtual thread that sleeps until due. */
    NbdTimer SYSTEM = new NbdTimer() {
        @Override
        public long nanoTime() {
            return System.nanoTime();
        }

        @Override
        public Scheduled schedule(long delayNanos, Runnable task) {
            // 0 pending, 1 running, 2 cancelled: a cancel never interrupts a task that started
            java.util.concurrent.atomic.AtomicInteger state = new java.util.concurrent.atomic.AtomicInteger();
            Thread t = Thread.ofVirtual().name("nbd-timer").start(() -> {
                try {
                    Thread.sleep(java.time.Duration.ofNanos(Math.max(0, delayNanos)));
                } catch (InterruptedException e) {
                    return; // cancelled
                }
                if (state.compareAndSet(0, 1)) {
                    task.run();
                }
            });
            return () -> {
                if (state.compareAndSet(0, 2)) {
                    t.interrupt();
                }
            };
        }
    };
}
