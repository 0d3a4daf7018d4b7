package jblockd.fuzz;

import static org.assertj.core.api.Assertions.assertThat;

import java.lang.management.ManagementFactory;
import java.time.Duration;
import java.util.Arrays;
import java.util.concurrent.Callable;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * The invariants every fuzz target asserts besides "a clear error or a result" (issue 18):
 * a time bound per input, and no allocation proportional to a length field that was not
 * checked first. Stateless; the bounds are deliberately loose (a shared 2-core machine), they
 * catch hangs and gigabyte allocations, not slowness.
 */
final class FuzzChecks {
    /** Longest any single input may take before it counts as a hang. */
    static final Duration TIME_BOUND = Duration.ofSeconds(10);
    /**
     * Bytes one input may make the process allocate beyond a fixed multiple of its size: a few
     * request buffers plus the fuzzer's own hooks (an 8 KiB qcow2 input that allocates 150 KiB
     * in regression mode once measured 101 MiB while fuzzing), never a buffer sized by a 32- or
     * 64-bit field from the input, which the 1 GiB heap of bin/fuzz turns into an
     * OutOfMemoryError anyway.
     */
    static final long ALLOCATION_SLACK = 256L << 20;

    private static final java.lang.management.ClassLoadingMXBean CLASSES = ManagementFactory.getClassLoadingMXBean();
    private static final com.sun.management.ThreadMXBean THREADS =
            (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();

    private FuzzChecks() {
    }

    /**
     * Runs {@code work} on a fresh thread and returns its result; fails (with the stuck thread's
     * stack) if it takes longer than {@link #TIME_BOUND}, and fails if the process (every
     * thread: server connections and client reader threads too) allocated more than
     * {@code 64 * inputLength + ALLOCATION_SLACK} bytes meanwhile, twice: over the bound once,
     * the work runs again and only a second run over it fails. One-off costs of a process that
     * has fuzzed for minutes (a 13,559-byte qcow2 input measured 320 MiB once after 7,000
     * inputs, 150 KiB per run in regression mode and under the bound when fuzzing began with it)
     * do not repeat; an allocation sized by the input does. {@code work} must therefore do the
     * same when run twice. Exceptions of {@code work} propagate unchanged.
     */
    static <T> T bounded(int inputLength, Callable<T> work) throws Exception {
        return bounded(inputLength, work, PROCESS);
    }

    /** {@link #bounded(int, Callable)} with runs measured by {@code meter} (tests give their own figures). */
    static <T> T bounded(int inputLength, Callable<T> work, Meter meter) throws Exception {
        long bound = 64L * inputLength + ALLOCATION_SLACK;
        Measured<T> first = meter.measure(work);
        if (first.allocated() <= bound || first.loadedClasses()) {
            return first.result();
        }
        Measured<T> again = meter.measure(work);
        if (!again.loadedClasses()) {
            assertThat(again.allocated())
                    .as("bytes allocated for a %d-byte input (first run: %d)", inputLength, first.allocated())
                    .isLessThanOrEqualTo(bound);
        }
        return first.result();
    }

    /** Runs the work once and measures it. */
    interface Meter {
        <T> Measured<T> measure(Callable<T> work) throws Exception;
    }

    /** The real measure: the work on a fresh thread, every thread's allocation counted. */
    static final Meter PROCESS = FuzzChecks::measure;

    /**
     * One run's result and the bytes every thread allocated meanwhile; {@code loadedClasses}: the
     * run was the first use of a code path, whose class loading (and, while fuzzing,
     * instrumenting) allocates hundreds of MiB that the input did not cause.
     */
    record Measured<T>(T result, long allocated, boolean loadedClasses) {
    }

    /**
     * The work runs on a fresh thread (a hang must not hold the caller), which stays alive until
     * its allocation is counted: a thread that has just ended can be missing from the process's
     * total (measured: an 8 MiB allocation counted as 528 bytes in a CI run).
     */
    private static <T> Measured<T> measure(Callable<T> work) throws Exception {
        long classesBefore = CLASSES.getTotalLoadedClassCount();
        long before = THREADS.getTotalThreadAllocatedBytes();
        CompletableFuture<T> outcome = new CompletableFuture<>();
        CountDownLatch counted = new CountDownLatch(1);
        Thread t = Thread.ofPlatform().daemon(true).name("fuzz-input").start(() -> {
            try {
                outcome.complete(work.call());
            } catch (Throwable e) {
                outcome.completeExceptionally(e);
            }
            try {
                counted.await();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        });
        try {
            T result;
            try {
                result = outcome.get(TIME_BOUND.toMillis(), TimeUnit.MILLISECONDS);
            } catch (TimeoutException e) {
                AssertionError hang = new AssertionError("input not handled within " + TIME_BOUND
                        + "; stuck at:\n" + stack(t));
                t.interrupt();
                throw hang;
            } catch (ExecutionException e) {
                if (e.getCause() instanceof Exception ex) {
                    throw ex;
                }
                if (e.getCause() instanceof Error err) {
                    throw err;
                }
                throw e;
            }
            long allocated = THREADS.getTotalThreadAllocatedBytes() - before;
            return new Measured<>(result, allocated, CLASSES.getTotalLoadedClassCount() != classesBefore);
        } finally {
            counted.countDown();
        }
    }

    /** {@link #bounded(int, Callable)} for work without a result. */
    static void bounded(int inputLength, ThrowingRunnable work) throws Exception {
        bounded(inputLength, () -> {
            work.run();
            return null;
        });
    }

    interface ThrowingRunnable {
        void run() throws Exception;
    }

    private static String stack(Thread t) {
        StringBuilder sb = new StringBuilder();
        Arrays.stream(t.getStackTrace()).forEach(f -> sb.append("    at ").append(f).append('\n'));
        return sb.toString();
    }
}
