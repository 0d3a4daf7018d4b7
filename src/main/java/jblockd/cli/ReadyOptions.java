package jblockd.cli;

import picocli.CommandLine.Option;

/** What to do once a job reaches READY (mirror, active commit): return, complete, or keep following. */
final class ReadyOptions {
    @Option(names = "--complete", description = "Complete (pivot) as soon as the job is READY")
    boolean complete;

    @Option(names = "--wait", description = "Keep following after READY until the job ends")
    boolean waitEnd;

    JobWaiter.OnReady onReady() {
        return complete ? JobWaiter.OnReady.COMPLETE : waitEnd ? JobWaiter.OnReady.WAIT : JobWaiter.OnReady.RETURN;
    }
}
