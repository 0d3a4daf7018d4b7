package jblockd.device;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import jblockd.qapi.QapiEvents;
import jblockd.qapi.RunStatus;

/**
 * The guest gate: stop() returns only when no guest request is inside, none gets in until
 * cont(), and held requests then go on. Many threads race through the lock-free fast path while
 * the state flips, so a lost wake-up or a request slipping past a stop shows up here.
 */
@Timeout(value = 30, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class RunStateTest {

    /** Counts STOP and RESUME. */
    static final class Counting extends AtomicInteger {
        final AtomicInteger stops = new AtomicInteger();
        final AtomicInteger resumes = new AtomicInteger();

        QapiEvents events() {
            QapiEvents none = QapiEvents.NONE;
            return (QapiEvents) java.lang.reflect.Proxy.newProxyInstance(QapiEvents.class.getClassLoader(),
                    new Class<?>[] {QapiEvents.class}, (p, m, a) -> {
                        switch (m.getName()) {
                            case "stop" -> stops.incrementAndGet();
                            case "resume" -> resumes.incrementAndGet();
                            default -> m.invoke(none, a);
                        }
                        return null;
                    });
        }
    }

    @Test
    void stopWaitsForRequestsInsideAndHoldsNewOnesUntilCont() throws Exception {
        Counting ev = new Counting();
        AtomicInteger resets = new AtomicInteger();
        RunState rs = new RunState(ev.events(), resets::incrementAndGet);
        AtomicInteger inside = new AtomicInteger();
        AtomicBoolean running = new AtomicBoolean(true);
        AtomicBoolean violated = new AtomicBoolean();
        AtomicBoolean gateClosed = new AtomicBoolean();
        AtomicLong passes = new AtomicLong();
        List<Thread> guests = new ArrayList<>();
        for (int i = 0; i < 16; i++) {
            guests.add(Thread.ofPlatform().start(() -> {
                while (running.get()) {
                    rs.enterGuest();
                    inside.incrementAndGet();
                    if (gateClosed.get()) {
                        violated.set(true); // got in while stopped
                    }
                    passes.incrementAndGet();
                    Thread.onSpinWait();
                    inside.decrementAndGet();
                    rs.leaveGuest();
                }
            }));
        }
        try {
            for (int round = 0; round < 200; round++) {
                Thread.sleep(0, 200_000);
                rs.stop();
                gateClosed.set(true);
                assertThat(inside.get()).as("requests inside after stop() returned (round %d)", round).isZero();
                assertThat(rs.status()).isEqualTo(RunStatus.PAUSED);
                long before = passes.get();
                Thread.sleep(0, 300_000);
                assertThat(passes.get()).as("requests passed while stopped").isEqualTo(before);
                gateClosed.set(false);
                rs.cont();
                long resumedAt = passes.get();
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
                while (passes.get() == resumedAt && System.nanoTime() < deadline) {
                    Thread.onSpinWait();
                }
                assertThat(passes.get()).as("held requests go on after cont (round %d)", round).isGreaterThan(resumedAt);
            }
        } finally {
            running.set(false);
            gateClosed.set(false);
            rs.cont();
            for (Thread t : guests) {
                t.join(5000);
            }
        }
        assertThat(violated).isFalse();
        assertThat(ev.stops.get()).isEqualTo(200);
        assertThat(ev.resumes.get()).isEqualTo(200);
        assertThat(resets.get()).isEqualTo(201);
        assertThat(guests).noneMatch(Thread::isAlive);
    }

    @Test
    void ioErrorStopsOnceAndHoldsTheFailedRequestUntilCont() throws Exception {
        Counting ev = new Counting();
        RunState rs = new RunState(ev.events(), () -> { });
        rs.ioError();
        rs.ioError(); // a second failing request: no second STOP
        assertThat(rs.status()).isEqualTo(RunStatus.IO_ERROR);
        assertThat(ev.stops.get()).isEqualTo(1);
        CountDownLatch entered = new CountDownLatch(1);
        Thread held = Thread.ofVirtual().start(() -> {
            rs.enterGuest();
            entered.countDown();
            rs.leaveGuest();
        });
        assertThat(entered.await(200, TimeUnit.MILLISECONDS)).as("entered while io-error").isFalse();
        rs.stop(); // already stopped: no event, returns at once
        assertThat(ev.stops.get()).isEqualTo(1);
        rs.cont();
        assertThat(entered.await(5, TimeUnit.SECONDS)).isTrue();
        held.join(5000);
        assertThat(ev.resumes.get()).isEqualTo(1);
        assertThat(rs.running()).isTrue();
    }

    /** Records STOP and RESUME in the order their emission finished; {@code onStop} runs inside STOP's emission. */
    static final class Ordered {
        final List<String> seen = java.util.Collections.synchronizedList(new ArrayList<>());
        volatile Runnable onStop = () -> { };

        QapiEvents events() {
            QapiEvents none = QapiEvents.NONE;
            return (QapiEvents) java.lang.reflect.Proxy.newProxyInstance(QapiEvents.class.getClassLoader(),
                    new Class<?>[] {QapiEvents.class}, (p, m, a) -> {
                        switch (m.getName()) {
                            case "stop" -> {
                                onStop.run();
                                seen.add("STOP");
                            }
                            case "resume" -> seen.add("RESUME");
                            default -> m.invoke(none, a);
                        }
                        return null;
                    });
        }
    }

    /** Spins until {@code t} has ended or parks (here: on the run-state lock); no timing involved. */
    private static void awaitEndedOrParked(Thread t) {
        while (t.getState() != Thread.State.TERMINATED && t.getState() != Thread.State.WAITING
                && t.getState() != Thread.State.TIMED_WAITING) {
            Thread.onSpinWait();
        }
    }

    @Test
    void contRacingWithAStopThatWaitsForRequestsNeitherHangsNorOrdersStopAfterResume() throws Exception {
        Ordered ev = new Ordered();
        RunState rs = new RunState(ev.events(), () -> { });
        CountDownLatch stopEmitted = new CountDownLatch(1);
        ev.onStop = stopEmitted::countDown;
        rs.enterGuest(); // a guest request inside: stop() has to wait for it
        Thread stopper = Thread.ofPlatform().start(rs::stop);
        assertThat(stopEmitted.await(10, TimeUnit.SECONDS)).as("STOP sent as the state changes (QEMU do_vm_stop)")
                .isTrue();
        rs.cont(); // the second client, while the first one's stop still waits for the request
        stopper.join(TimeUnit.SECONDS.toMillis(10));
        assertThat(stopper.isAlive()).as("stop() hangs once a cont overtook it").isFalse();
        rs.leaveGuest();
        assertThat(ev.seen).containsExactly("STOP", "RESUME");
        assertThat(rs.running()).isTrue();
    }

    @Test
    void contRacingWithIoErrorNeverSendsStopAfterResume() throws Exception {
        Ordered ev = new Ordered();
        RunState rs = new RunState(ev.events(), () -> { });
        Thread[] resumer = new Thread[1];
        // While ioError() sends STOP, a second client's cont arrives; it must not overtake the STOP.
        ev.onStop = () -> {
            resumer[0] = Thread.ofPlatform().start(rs::cont);
            awaitEndedOrParked(resumer[0]);
        };
        rs.ioError();
        resumer[0].join(TimeUnit.SECONDS.toMillis(10));
        assertThat(resumer[0].isAlive()).isFalse();
        assertThat(ev.seen).containsExactly("STOP", "RESUME");
        assertThat(rs.running()).isTrue();
    }

    @Test
    void stopAndContFromTwoClientsUnderGuestLoadAlternateAndNeverHang() throws Exception {
        Ordered ev = new Ordered();
        RunState rs = new RunState(ev.events(), () -> { });
        AtomicBoolean running = new AtomicBoolean(true);
        List<Thread> guests = new ArrayList<>();
        for (int i = 0; i < 8; i++) {
            guests.add(Thread.ofPlatform().start(() -> {
                while (running.get()) {
                    rs.enterGuest();
                    Thread.onSpinWait();
                    rs.leaveGuest();
                }
            }));
        }
        int rounds = 2000;
        CountDownLatch go = new CountDownLatch(1);
        Runnable stops = () -> {
            awaitQuietly(go);
            for (int i = 0; i < rounds; i++) {
                rs.stop();
                if (i % 7 == 0) {
                    rs.ioError();
                }
            }
        };
        Runnable conts = () -> {
            awaitQuietly(go);
            for (int i = 0; i < rounds; i++) {
                rs.cont();
            }
        };
        Thread a = Thread.ofPlatform().start(stops);
        Thread b = Thread.ofPlatform().start(conts);
        go.countDown();
        a.join(TimeUnit.SECONDS.toMillis(20));
        b.join(TimeUnit.SECONDS.toMillis(20));
        assertThat(a.isAlive() || b.isAlive()).as("stop/cont hang").isFalse();
        rs.cont();
        running.set(false);
        for (Thread t : guests) {
            t.join(5000);
        }
        assertThat(guests).noneMatch(Thread::isAlive);
        List<String> seen = List.copyOf(ev.seen);
        for (int i = 0; i < seen.size(); i++) {
            assertThat(seen.get(i)).as("event %d of %s", i, seen.size()).isEqualTo(i % 2 == 0 ? "STOP" : "RESUME");
        }
        assertThat(seen.size() % 2).as("ends with RESUME (running)").isZero();
    }

    private static void awaitQuietly(CountDownLatch l) {
        try {
            l.await();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
