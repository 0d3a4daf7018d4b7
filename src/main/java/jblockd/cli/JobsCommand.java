package jblockd.cli;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import jblockd.client.BlockJobInfo;
import jblockd.client.QmpClient;
import picocli.CommandLine.Command;
import picocli.CommandLine.ParentCommand;

/** {@code jblockctl jobs}: the block jobs as a table (query-block-jobs). */
@Command(name = "jobs", description = "List the block jobs (query-block-jobs).")
final class JobsCommand implements Callable<Integer> {
    @ParentCommand
    JblockCtl top;

    @Override
    public Integer call() {
        try (QmpClient qmp = top.connect()) {
            if (top.json) {
                JsonNode r = qmp.execute("query-block-jobs", null);
                top.out.println(r.toString());
                return 0;
            }
            List<BlockJobInfo> jobs = qmp.jobs().queryBlockJobs();
            top.out.print(jobs.isEmpty() ? "no block jobs\n" : table(jobs).render());
            return 0;
        }
    }

    static Table table(List<BlockJobInfo> jobs) {
        Table t = new Table("ID", "TYPE", "STATUS", "PROGRESS", "DONE", "TOTAL", "SPEED", "IO-STATUS", "FLAGS");
        for (BlockJobInfo j : jobs) {
            double pct = j.len() > 0 ? 100.0 * j.offset() / j.len() : 0;
            StringBuilder flags = new StringBuilder();
            if (j.paused()) {
                flags.append("paused ");
            }
            if (j.ready()) {
                flags.append("ready ");
            }
            if (j.cbwBuffer() != null) {
                BlockJobInfo.CbwBuffer b = j.cbwBuffer();
                flags.append(String.format(Locale.ROOT, "cbw-buffer %s/%s (%d saved, %d sync) ",
                        Sizes.format(b.used()), Sizes.format(b.size()), b.saves(), b.fallbacks()));
            }
            if (j.error() != null) {
                flags.append("error: ").append(j.error());
            }
            t.row(j.device(), j.type() == null ? "?" : j.type().wire(), j.status() == null ? "?" : j.status().wire(),
                    String.format(Locale.ROOT, "%.1f%%", pct), Sizes.format(j.offset()), Sizes.format(j.len()),
                    j.speed() == 0 ? "unlimited" : Sizes.formatRate(j.speed()),
                    j.ioStatus() == null ? "ok" : j.ioStatus().wire(), flags.toString().strip());
        }
        return t;
    }
}
