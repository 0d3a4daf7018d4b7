package jblockd.cli;

import java.io.PrintStream;
import java.util.HashMap;
import java.util.Map;
import jblockd.client.JobProgress;
import jblockd.client.JobResult;

/**
 * For logs and pipes: a plain line per job at most every second, and at once whenever the
 * status, pause state, io-status or error changes.
 */
final class PlainProgress implements ProgressView {
    private static final long EVERY_NANOS = 1_000_000_000L;

    private final PrintStream out;
    private final Map<String, Long> lastPrint = new HashMap<>();
    private final Map<String, String> lastState = new HashMap<>();
    private final long start = System.nanoTime();

    PlainProgress(PrintStream out) {
        this.out = out;
    }

    @Override
    public synchronized void update(JobProgress p) {
        long now = System.nanoTime();
        String state = p.status() + "/" + p.paused() + "/" + p.ioStatus() + "/" + p.lastError();
        Long last = lastPrint.get(p.id());
        if (last == null || now - last >= EVERY_NANOS || !state.equals(lastState.get(p.id()))) {
            out.println(ProgressLine.render(p, false));
            out.flush();
            lastPrint.put(p.id(), now);
            lastState.put(p.id(), state);
        }
    }

    @Override
    public synchronized void finish(JobProgress last, JobResult r) {
        out.println(ProgressLine.render(last, false));
        out.println(ProgressLine.result(r, (System.nanoTime() - start) / 1e9));
        out.flush();
    }

    @Override
    public synchronized void note(String jobId, String text) {
        out.println(jobId + ": " + text);
        out.flush();
    }
}
