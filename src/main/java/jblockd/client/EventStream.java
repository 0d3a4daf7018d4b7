package jblockd.client;

import java.time.Duration;
import java.util.Iterator;
import java.util.NoSuchElementException;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import java.util.function.Predicate;

/**
 * Every event the client receives from the moment this stream was opened, buffered in order
 * until taken. Iterating blocks until the next event; the iteration ends when the stream or
 * the connection is closed. One consumer thread at a time.
 */
public final class EventStream implements AutoCloseable, Iterable<QmpEvent> {
    private static final QmpEvent END = new QmpEvent("", null, java.time.Instant.EPOCH);

    private final QmpConnection conn;
    private final LinkedBlockingQueue<QmpEvent> queue = new LinkedBlockingQueue<>();
    private final Consumer<QmpEvent> listener = queue::add;
    private final Runnable closeHook = () -> queue.add(END);
    private volatile boolean ended;

    EventStream(QmpConnection conn) {
        this.conn = conn;
        conn.addInlineListener(listener);
        conn.onClose(closeHook);
    }

    /** The next event, waiting up to {@code timeout}; null on timeout or when the stream ended. */
    public QmpEvent poll(Duration timeout) throws InterruptedException {
        if (ended) {
            return null;
        }
        QmpEvent ev = queue.poll(timeout.toNanos(), TimeUnit.NANOSECONDS);
        if (ev == END) {
            ended = true;
            return null;
        }
        return ev;
    }

    /**
     * Takes events until one matches, waiting up to {@code timeout} in all; skipped events are
     * dropped. Null when none matched in time.
     */
    public QmpEvent await(Predicate<QmpEvent> match, Duration timeout) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (true) {
            long left = deadline - System.nanoTime();
            if (left <= 0) {
                return null;
            }
            QmpEvent ev = poll(Duration.ofNanos(left));
            if (ev == null) {
                if (ended) {
                    return null;
                }
                continue;
            }
            if (match.test(ev)) {
                return ev;
            }
        }
    }

    /** Takes events until one named {@code name} arrives (see {@link #await(Predicate, Duration)}). */
    public QmpEvent await(String name, Duration timeout) throws InterruptedException {
        return await(ev -> ev.name().equals(name), timeout);
    }

    @Override
    public Iterator<QmpEvent> iterator() {
        return new Iterator<>() {
            private QmpEvent next;

            @Override
            public boolean hasNext() {
                while (next == null && !ended) {
                    try {
                        next = poll(Duration.ofDays(365));
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                        return false;
                    }
                }
                return next != null;
            }

            @Override
            public QmpEvent next() {
                if (!hasNext()) {
                    throw new NoSuchElementException();
                }
                QmpEvent ev = next;
                next = null;
                return ev;
            }
        };
    }

    @Override
    public void close() {
        conn.removeInlineListener(listener);
        conn.removeCloseHook(closeHook);
        queue.add(END);
    }
}
