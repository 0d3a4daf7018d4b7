package jblockd.nbd.server;

import java.nio.ByteBuffer;
import java.util.concurrent.ConcurrentLinkedDeque;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Direct buffers for request payloads, in power-of-two size classes from 4 KiB to 32 MiB, so
 * that socket and file I/O copy no more than once and steady traffic allocates nothing. Bounded:
 * at most {@code maxPooledBytes} are kept; the rest goes to the garbage collector. Each class is
 * a stack (last released, first reused): that buffer is the likeliest to still be in the CPU
 * caches.
 */
final class BufferPool {
    private static final int MIN_SHIFT = 12;
    private static final int MAX_SHIFT = 25;

    @SuppressWarnings("unchecked")
    private final ConcurrentLinkedDeque<ByteBuffer>[] classes = new ConcurrentLinkedDeque[MAX_SHIFT - MIN_SHIFT + 1];
    private final AtomicLong pooledBytes = new AtomicLong();
    private final long maxPooledBytes;

    BufferPool(long maxPooledBytes) {
        this.maxPooledBytes = maxPooledBytes;
        for (int i = 0; i < classes.length; i++) {
            classes[i] = new ConcurrentLinkedDeque<>();
        }
    }

    private static int classOf(int size) {
        int shift = size <= 1 << MIN_SHIFT ? MIN_SHIFT : 32 - Integer.numberOfLeadingZeros(size - 1);
        return shift - MIN_SHIFT;
    }

    /** A cleared buffer with {@code limit == size} (size <= 32 MiB). */
    ByteBuffer acquire(int size) {
        int c = classOf(size);
        ByteBuffer b = classes[c].pollFirst();
        if (b == null) {
            b = ByteBuffer.allocateDirect(1 << (c + MIN_SHIFT));
        } else {
            pooledBytes.addAndGet(-b.capacity());
        }
        b.clear().limit(size);
        return b;
    }

    void release(ByteBuffer b) {
        if (b == null || !b.isDirect() || Integer.bitCount(b.capacity()) != 1
                || b.capacity() < 1 << MIN_SHIFT || b.capacity() > 1 << MAX_SHIFT) {
            return;
        }
        if (pooledBytes.addAndGet(b.capacity()) > maxPooledBytes) {
            pooledBytes.addAndGet(-b.capacity());
            return;
        }
        classes[classOf(b.capacity())].offerFirst(b);
    }
}
