package jblockd.cli;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import jblockd.client.BlockJobInfo;
import jblockd.client.Job;
import jblockd.client.QmpClient;
import picocli.CommandLine.Command;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.ParentCommand;

/** {@code jblockctl watch [JOB...]}: progress bars of running jobs until they end. */
@Command(name = "watch", description = {"Follow jobs (default: every current block job) with progress bars until they end.",
        "Exit code 0 when all completed, 1 when any failed or was cancelled."})
final class WatchCommand implements Callable<Integer> {
    @ParentCommand
    JblockCtl top;

    @Parameters(arity = "0..*", paramLabel = "JOB")
    List<String> ids = new ArrayList<>();

    @Override
    public Integer call() throws InterruptedException {
        try (QmpClient qmp = top.connect()) {
            List<String> which = ids;
            if (which.isEmpty()) {
                which = qmp.jobs().queryBlockJobs().stream().map(BlockJobInfo::device).toList();
                if (which.isEmpty()) {
                    top.out.println(top.json ? "{\"kind\":\"note\",\"text\":\"no block jobs\"}" : "no block jobs");
                    return 0;
                }
            }
            List<Job> jobs = new ArrayList<>();
            for (String id : which) {
                jobs.add(qmp.jobs().attach(id));
            }
            return JobWaiter.await(jobs, top.progressView(), JobWaiter.OnReady.WAIT, false);
        }
    }
}
