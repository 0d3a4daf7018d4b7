package jblockd.client;

/** An event subscription; {@link #close()} ends it (idempotent, never throws). */
@FunctionalInterface
public interface Subscription extends AutoCloseable {
    @Override
    void close();
}
