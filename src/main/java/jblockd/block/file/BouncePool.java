package jblockd.block.file;

import java.nio.ByteBuffer;
import java.util.concurrent.ArrayBlockingQueue;

/**
 * A few aligned direct buffers for O_DIRECT bounce I/O, so that an unaligned request does not
 * allocate (and zero, and later clean) a fresh direct buffer every time. Bounded: a burst of
 * requests allocates extra buffers that are simply dropped when the pool is full.
 * Per driver instance (no static state). Thread-safe.
 */
final class BouncePool {
    static final int BUFFER_SIZE = 1 << 20;
    private static final int KEEP = 8;

    private final int alignment;
    private final ArrayBlockingQueue<ByteBuffer> free = new ArrayBlockingQueue<>(KEEP);

    BouncePool(int alignment) {
        this.alignment = alignment;
    }

    /** A cleared buffer of {@link #BUFFER_SIZE} bytes whose address is aligned. */
    ByteBuffer take() {
        ByteBuffer b = free.poll();
        if (b == null) {
            b = ByteBuffer.allocateDirect(BUFFER_SIZE + alignment).alignedSlice(alignment);
            b.limit(BUFFER_SIZE);
        }
        return b.clear();
    }

    void give(ByteBuffer b) {
        free.offer(b);
    }
}
