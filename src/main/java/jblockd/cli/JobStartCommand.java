package jblockd.cli;

import java.util.List;
import java.util.concurrent.Callable;
import jblockd.client.Job;
import jblockd.client.JobArgs;
import jblockd.client.QmpClient;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParentCommand;

/**
 * Options and behaviour shared by the job-starting commands: start the job, then (unless
 * {@code --detach}) follow it with a progress bar until it ends; exit 0 on success, 1 on
 * failure or cancel.
 */
abstract class JobStartCommand implements Callable<Integer> {
    @ParentCommand
    JblockCtl top;

    @Option(names = "--job-id", paramLabel = "ID", description = "Job id (default: the device name)")
    String jobId;

    @Option(names = "--speed", paramLabel = "SPEED", converter = Converters.Size.class,
            description = "Rate limit in bytes/s (512K, 50M, ...; 0 = unlimited)")
    Long speed;

    @Option(names = "--detach", description = "Return as soon as the job has started")
    boolean detach;

    @Option(names = "--auto-finalize", negatable = true, defaultValue = "true", fallbackValue = "true",
            description = "--no-auto-finalize: the job waits in 'pending' for 'jblockctl finalize'")
    boolean autoFinalize = true;

    @Option(names = "--auto-dismiss", negatable = true, defaultValue = "true", fallbackValue = "true",
            description = "--no-auto-dismiss: the job stays 'concluded' until 'jblockctl dismiss'")
    boolean autoDismiss = true;

    /** Applies the shared options to the command's arguments. */
    <T extends JobArgs<T>> T common(T args) {
        if (jobId != null) {
            args.jobId(jobId);
        }
        if (speed != null) {
            args.speed(speed);
        }
        if (!autoFinalize) {
            args.autoFinalize(false);
        }
        if (!autoDismiss) {
            args.autoDismiss(false);
        }
        return args;
    }

    /** What the command does when its job reports READY. */
    JobWaiter.OnReady onReady() {
        return JobWaiter.OnReady.WAIT;
    }

    abstract Job start(QmpClient qmp);

    @Override
    public Integer call() throws Exception {
        try (QmpClient qmp = top.connect()) {
            return startAndFollow(qmp);
        }
    }

    int startAndFollow(QmpClient qmp) throws InterruptedException {
        Job job = start(qmp);
        if (detach) {
            if (top.json) {
                top.out.println("{\"kind\":\"started\",\"id\":\"" + job.id() + "\"}");
            } else {
                top.out.println(job.id() + ": started");
            }
            return 0;
        }
        return JobWaiter.await(List.of(job), top.progressView(), onReady(), false);
    }
}
