package jblockd.device;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

import org.junit.jupiter.api.Test;

/** The device drain counter: a section waits for requests in flight; new requests wait for it. */
class RequestGateTest {

    private static void awaitParked(Thread t) {
        while (t.isAlive() && t.getState() != Thread.State.WAITING) {
            Thread.onSpinWait();
        }
    }

    @Test
    void aSectionBeginsOnlyOnceTheRequestsInFlightHaveLeft() throws Exception {
        RequestGate gate = new RequestGate();
        gate.enter();
        CountDownLatch begun = new CountDownLatch(1);
        Thread drainer = Thread.ofPlatform().start(() -> {
            gate.drainBegin();
            begun.countDown();
        });
        awaitParked(drainer);
        assertThat(begun.getCount()).as("section open while a request is in flight").isEqualTo(1);
        gate.leave();
        assertThat(begun.await(10, TimeUnit.SECONDS)).isTrue();
        assertThat(gate.drained()).isTrue();
        gate.drainEnd();
        assertThat(gate.drained()).isFalse();
    }

    @Test
    void newRequestsWaitUntilTheLastNestedSectionCloses() throws Exception {
        RequestGate gate = new RequestGate();
        gate.drainBegin();
        gate.drainBegin();
        AtomicBoolean entered = new AtomicBoolean();
        Thread request = Thread.ofPlatform().start(() -> {
            gate.enter();
            entered.set(true);
            gate.leave();
        });
        awaitParked(request);
        gate.drainEnd();
        awaitParked(request);
        assertThat(entered).as("entered while one section is still open").isFalse();
        gate.drainEnd();
        request.join(10_000);
        assertThat(entered).isTrue();
    }

    @Test
    void closingMoreSectionsThanWereOpenedIsABug() {
        assertThatThrownBy(() -> new RequestGate().drainEnd()).isInstanceOf(IllegalStateException.class);
    }

    @Test
    void aRootChangeOutsideADrainedSectionIsRefused() {
        Device d = new Device("d0", new jblockd.block.BlockNode("n", false,
                new jblockd.block.nullco.NullCoDriver(1 << 20, false, false), false),
                jblockd.qapi.BlockdevOnError.REPORT, jblockd.qapi.BlockdevOnError.REPORT);
        assertThatThrownBy(() -> d.replaceRoot(d.root())).isInstanceOf(IllegalStateException.class);
    }
}
