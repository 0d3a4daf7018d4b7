package jblockd.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.PrintStream;
import java.util.HashMap;
import java.util.Map;
import jblockd.client.JobProgress;
import jblockd.client.JobResult;

/**
 * Machine-readable progress: one JSON object per line, {@code "kind": "progress"} at most every
 * half second per job (and at every state change), {@code "kind": "note"}, and a final
 * {@code "kind": "result"} object per job.
 */
final class JsonProgress implements ProgressView {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final long EVERY_NANOS = 500_000_000L;

    private final PrintStream out;
    private final Map<String, Long> lastPrint = new HashMap<>();
    private final Map<String, String> lastState = new HashMap<>();

    JsonProgress(PrintStream out) {
        this.out = out;
    }

    @Override
    public synchronized void update(JobProgress p) {
        long now = System.nanoTime();
        String state = p.status() + "/" + p.paused() + "/" + p.ioStatus() + "/" + p.lastError();
        Long last = lastPrint.get(p.id());
        if (last == null || now - last >= EVERY_NANOS || !state.equals(lastState.get(p.id()))) {
            emit(progress(p));
            lastPrint.put(p.id(), now);
            lastState.put(p.id(), state);
        }
    }

    @Override
    public synchronized void finish(JobProgress last, JobResult r) {
        emit(progress(last));
        ObjectNode o = JSON.createObjectNode().put("kind", "result").put("id", r.id())
                .put("type", r.type() == null ? null : r.type().wire())
                .put("outcome", r.outcome().name().toLowerCase(java.util.Locale.ROOT))
                .put("offset", r.offset()).put("len", r.len());
        if (r.error() != null) {
            o.put("error", r.error());
        }
        emit(o);
    }

    @Override
    public synchronized void note(String jobId, String text) {
        emit(JSON.createObjectNode().put("kind", "note").put("id", jobId).put("text", text));
    }

    static ObjectNode progress(JobProgress p) {
        ObjectNode o = JSON.createObjectNode().put("kind", "progress").put("id", p.id())
                .put("type", p.type() == null ? null : p.type().wire())
                .put("status", p.status() == null ? null : p.status().wire())
                .put("offset", p.offset()).put("len", p.len())
                .put("percent", Math.round(p.percent() * 10) / 10.0)
                .put("rate", (long) p.rate())
                .put("io-status", p.ioStatus() == null ? "ok" : p.ioStatus().wire())
                .put("paused", p.paused()).put("ready", p.ready()).put("speed", p.speed());
        if (p.eta() != null) {
            o.put("eta-seconds", p.eta().toSeconds());
        }
        if (p.lastError() != null) {
            o.put("error", p.lastError());
        }
        return o;
    }

    private void emit(ObjectNode o) {
        out.println(o.toString());
        out.flush();
    }
}
