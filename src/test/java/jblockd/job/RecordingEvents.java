package jblockd.job;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;

import jblockd.qapi.ErrorAction;
import jblockd.qapi.IoOperation;
import jblockd.qapi.JobStatus;
import jblockd.qapi.JobType;
import jblockd.qapi.QapiEvents;

/** Records events as short strings: {@code J(running)}, {@code ERROR(read,stop)}, {@code COMPLETED(err)}. */
public final class RecordingEvents implements QapiEvents {
    private final List<String> events = new ArrayList<>();

    private synchronized void add(String s) {
        events.add(s);
        notifyAll();
    }

    public synchronized List<String> events() {
        return List.copyOf(events);
    }

    public synchronized void clear() {
        events.clear();
    }

    /** Waits until an event matching {@code p} was recorded; fails after 10 s. */
    public synchronized void await(Predicate<String> p) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (events.stream().noneMatch(p)) {
            long left = deadline - System.nanoTime();
            if (left <= 0) {
                throw new AssertionError("event not seen; got " + events);
            }
            TimeUnit.NANOSECONDS.timedWait(this, left);
        }
    }

    /** Waits until the recorded events contain {@code seq} in this order (gaps allowed). */
    public synchronized void awaitSequence(String... seq) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (!containsSequence(seq)) {
            long left = deadline - System.nanoTime();
            if (left <= 0) {
                throw new AssertionError("sequence " + List.of(seq) + " not seen; got " + events);
            }
            TimeUnit.NANOSECONDS.timedWait(this, left);
        }
    }

    private boolean containsSequence(String... seq) {
        int i = 0;
        for (String e : events) {
            if (i < seq.length && e.equals(seq[i])) {
                i++;
            }
        }
        return i == seq.length;
    }

    public void await(String exact) throws InterruptedException {
        await(exact::equals);
    }

    @Override
    public void jobStatusChange(String id, JobStatus status) {
        add("J(" + status.wire() + ")");
    }

    @Override
    public void blockJobCompleted(JobType type, String device, long len, long offset, long speed, String error) {
        add(error == null ? "COMPLETED" : "COMPLETED(" + error + ")");
    }

    @Override
    public void blockJobCancelled(JobType type, String device, long len, long offset, long speed) {
        add("CANCELLED");
    }

    @Override
    public void blockJobError(String device, IoOperation operation, ErrorAction action) {
        add("ERROR(" + operation.wire() + "," + action.wire() + ")");
    }

    @Override
    public void blockJobReady(JobType type, String device, long len, long offset, long speed) {
        add("READY");
    }

    @Override
    public void blockJobPending(JobType type, String id) {
        add("PENDING");
    }

    @Override
    public void blockIoError(String device, String nodeName, IoOperation operation, ErrorAction action,
                             Boolean nospace, String reason) {
        add("IO_ERROR(" + operation.wire() + "," + action.wire() + ")");
    }

    @Override
    public void stop() {
        add("STOP");
    }

    @Override
    public void resume() {
        add("RESUME");
    }

    @Override
    public void shutdown(boolean guest, String reason) {
        add("SHUTDOWN");
    }

    @Override
    public void blockExportDeleted(String id) {
        add("BLOCK_EXPORT_DELETED");
    }

    @Override
    public void blockWriteThreshold(String nodeName, long amountExceeded, long writeThreshold) {
        add("BLOCK_WRITE_THRESHOLD");
    }
}
