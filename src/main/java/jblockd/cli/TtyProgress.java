package jblockd.cli;

import java.io.PrintStream;
import java.util.LinkedHashMap;
import java.util.Map;
import jblockd.client.JobProgress;
import jblockd.client.JobResult;

/**
 * One line per job, redrawn in place: the cursor goes back up over the block of job lines
 * ({@code ESC [ n A}), each line is rewritten after {@code \r} and cleared to its end
 * ({@code ESC [ K}). Notes and results are printed above the block.
 */
final class TtyProgress implements ProgressView {
    private final PrintStream out;
    private final Map<String, String> lines = new LinkedHashMap<>();
    private final long start = System.nanoTime();
    private int drawn;

    TtyProgress(PrintStream out) {
        this.out = out;
    }

    @Override
    public synchronized void update(JobProgress p) {
        lines.put(p.id(), ProgressLine.render(p, true));
        redraw("");
    }

    @Override
    public synchronized void finish(JobProgress last, JobResult r) {
        // the finished job's final bar and its result move above the bars still running
        lines.remove(r.id());
        redraw("\r" + ProgressLine.render(last, true) + "\u001b[K\n\r"
                + ProgressLine.result(r, (System.nanoTime() - start) / 1e9) + "\u001b[K\n");
    }

    @Override
    public synchronized void note(String jobId, String text) {
        redraw("\r" + jobId + ": " + text + "\u001b[K\n");
    }

    /** Goes back over the block of bars, prints {@code above} (finished lines), then the bars. */
    private void redraw(String above) {
        StringBuilder sb = new StringBuilder();
        if (drawn > 0) {
            sb.append("\u001b[").append(drawn).append('A');
        }
        sb.append(above);
        for (String line : lines.values()) {
            sb.append('\r').append(line).append("\u001b[K\n");
        }
        out.print(sb);
        out.flush();
        drawn = lines.size();
    }
}
