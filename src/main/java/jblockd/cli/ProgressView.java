package jblockd.cli;

import jblockd.client.JobProgress;
import jblockd.client.JobResult;

/**
 * Shows job progress: a redrawn bar per job on a terminal ({@link TtyProgress}), periodic plain
 * lines otherwise ({@link PlainProgress}), or JSON lines ({@link JsonProgress}). Calls come from
 * one thread at a time (the client's event thread, or the waiter).
 */
interface ProgressView {
    void update(JobProgress p);

    void finish(JobProgress last, JobResult r);

    /** A one-line note (e.g. "mirror is ready"). */
    void note(String jobId, String text);

    /** Chooses the view for this process's stdout. */
    static ProgressView forOutput(boolean json, java.io.PrintStream out) {
        if (json) {
            return new JsonProgress(out);
        }
        return Terminal.stdoutIsTerminal() ? new TtyProgress(out) : new PlainProgress(out);
    }
}
