package jblockd.fuzz;

import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.logging.Handler;
import java.util.logging.Level;
import java.util.logging.LogRecord;
import java.util.logging.Logger;

/**
 * What a server thread does with an unexpected exception, made visible to a fuzz target: a
 * thread that dies of an uncaught exception, or a {@code jblockd.*} logger reporting a WARNING
 * or worse with a stack (NbdConnection's "NBD request failed"). Both mean the input reached a
 * bug that the protocol papered over (a connection dropped, EIO for a programming error).
 * The uncaught-exception handler is process-wide by nature; install one per test class.
 */
final class Incidents implements AutoCloseable {
    private final List<Throwable> seen = new CopyOnWriteArrayList<>();
    private final Logger jblockd = Logger.getLogger("jblockd");
    private final Thread.UncaughtExceptionHandler previous = Thread.getDefaultUncaughtExceptionHandler();
    private final Handler handler = new Handler() {
        @Override
        public void publish(LogRecord r) {
            if (r.getLevel().intValue() >= Level.WARNING.intValue() && r.getThrown() != null) {
                seen.add(new AssertionError("logged: " + r.getMessage(), r.getThrown()));
            }
        }

        @Override
        public void flush() {
        }

        @Override
        public void close() {
        }
    };

    Incidents() {
        Thread.setDefaultUncaughtExceptionHandler((t, e) -> seen.add(
                new AssertionError("thread " + t.getName() + " died", e)));
        jblockd.addHandler(handler);
    }

    /** Fails with the first incident since the last call (and forgets them all). */
    void assertNone() {
        if (!seen.isEmpty()) {
            Throwable first = seen.getFirst();
            seen.clear();
            throw first instanceof AssertionError a ? a : new AssertionError(first);
        }
    }

    @Override
    public void close() {
        jblockd.removeHandler(handler);
        Thread.setDefaultUncaughtExceptionHandler(previous);
    }
}
