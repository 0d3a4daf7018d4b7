package jblockd.block.cbw;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.ByteBuffer;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;

class CopyBuffersTest {
    private static final int UNIT = 64 * 1024;

    @Test
    void aBufferIsSizedToTheCopyAndReusedForTheSameSize() {
        CopyBuffers pool = new CopyBuffers(UNIT, 16, 32);
        ByteBuffer one = pool.take(1);
        ByteBuffer three = pool.take(3);
        assertThat(one.capacity()).isEqualTo(UNIT);
        assertThat(three.capacity()).isEqualTo(3 * UNIT);
        one.position(100);
        pool.give(one);
        ByteBuffer again = pool.take(1);
        assertThat(again).isSameAs(one);
        assertThat(again.position()).isZero();
        assertThat(again.limit()).isEqualTo(UNIT);
        assertThat(pool.take(3)).isNotSameAs(three); // three is still out
    }

    @Test
    void takingWaitsWhileTheBoundIsInFlight() throws Exception {
        CopyBuffers pool = new CopyBuffers(UNIT, 16, 16);
        ByteBuffer all = pool.take(16);
        CountDownLatch started = new CountDownLatch(1);
        CompletableFuture<ByteBuffer> waiting = CompletableFuture.supplyAsync(() -> {
            started.countDown();
            return pool.take(1);
        });
        started.await();
        // It cannot finish before the buffer comes back; when it does, it gets one.
        assertThat(waiting).isNotDone();
        pool.give(all);
        assertThat(waiting.get(10, TimeUnit.SECONDS).capacity()).isEqualTo(UNIT);
    }

    @Test
    void freeBuffersAreKeptOnlyUpToTheBound() {
        CopyBuffers pool = new CopyBuffers(UNIT, 4, 4);
        ByteBuffer four = pool.take(4);
        pool.give(four);
        // four units kept; a one-unit buffer given back now would exceed the bound: dropped
        ByteBuffer one = pool.take(1);
        pool.give(one);
        assertThat(pool.take(1)).isNotSameAs(one);
    }

    @Test
    void sizesOutsideOneChunkAndABoundBelowOneChunkAreRefused() {
        CopyBuffers pool = new CopyBuffers(UNIT, 16, 32);
        assertThatThrownBy(() -> pool.take(0)).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> pool.take(17)).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> new CopyBuffers(UNIT, 16, 8)).isInstanceOf(IllegalArgumentException.class);
    }
}
