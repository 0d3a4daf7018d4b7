package jblockd.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.concurrent.Callable;
import java.util.function.Supplier;
import jblockd.client.BlockInfo;
import jblockd.client.CommandNotFoundException;
import jblockd.client.ExportInfo;
import jblockd.client.NodeInfo;
import jblockd.client.QmpClient;
import picocli.CommandLine.Command;
import picocli.CommandLine.ParentCommand;

/** {@code jblockctl info}: run state, devices, nodes, exports and jobs as tables. */
@Command(name = "info", description = {"Show the run state, devices, nodes, exports and jobs as tables",
        "(query-status, query-block, query-named-block-nodes, query-block-exports, query-block-jobs)."})
final class InfoCommand implements Callable<Integer> {
    @ParentCommand
    JblockCtl top;

    @Override
    public Integer call() {
        try (QmpClient qmp = top.connect()) {
            if (top.json) {
                ObjectNode o = new ObjectMapper().createObjectNode();
                o.set("status", optional(() -> qmp.execute("query-status", null)));
                o.set("devices", qmp.execute("query-block", null));
                o.set("nodes", optional(() -> qmp.execute("query-named-block-nodes", null)));
                o.set("exports", optional(() -> qmp.execute("query-block-exports", null)));
                o.set("jobs", optional(() -> qmp.execute("query-block-jobs", null)));
                top.out.println(o.toString());
                return 0;
            }
            StringBuilder sb = new StringBuilder();
            try {
                var st = qmp.queryStatus();
                sb.append("Run state: ").append(st.wire()).append(st.running() ? "" : " (guest I/O held)").append("\n\n");
            } catch (CommandNotFoundException e) {
                sb.append("Run state: unknown (no query-status)\n\n");
            }

            Table devices = new Table("DEVICE", "NODE", "FORMAT", "SIZE", "RO", "IO-STATUS", "FILE");
            for (BlockInfo b : qmp.block().queryBlock()) {
                devices.row(b.device(), b.nodeName(), b.driver(), b.virtualSize() < 0 ? null : Sizes.format(b.virtualSize()),
                        b.readOnly() ? "yes" : "no", b.ioStatus() == null ? null : b.ioStatus().wire(), b.file());
            }
            section(sb, "Devices", devices);

            Table nodes = new Table("NODE", "DRIVER", "SIZE", "RO", "FILE");
            try {
                for (NodeInfo n : qmp.block().queryNamedBlockNodes()) {
                    nodes.row(n.nodeName(), n.driver(), n.virtualSize() < 0 ? null : Sizes.format(n.virtualSize()),
                            n.readOnly() ? "yes" : "no", n.file());
                }
            } catch (CommandNotFoundException e) {
                // section stays empty
            }
            section(sb, "Nodes", nodes);

            Table exports = new Table("ID", "TYPE", "NODE", "STATE");
            try {
                for (ExportInfo e : qmp.exports().queryBlockExports()) {
                    exports.row(e.id(), e.type(), e.nodeName(), e.shuttingDown() ? "shutting down" : "serving");
                }
            } catch (CommandNotFoundException e) {
                // an old peer without block exports: the section stays empty
            }
            section(sb, "Exports", exports);

            java.util.List<jblockd.client.BlockJobInfo> jobs;
            try {
                jobs = qmp.jobs().queryBlockJobs();
            } catch (CommandNotFoundException e) {
                jobs = java.util.List.of(); // a daemon without the job engine
            }
            if (jobs.isEmpty()) {
                sb.append("Jobs: none\n");
            } else {
                sb.append("Jobs:\n").append(JobsCommand.table(jobs).render());
            }
            top.out.print(sb);
            return 0;
        }
    }

    private static void section(StringBuilder sb, String title, Table t) {
        if (t.isEmpty()) {
            sb.append(title).append(": none\n\n");
        } else {
            sb.append(title).append(":\n").append(t.render()).append('\n');
        }
    }

    private static com.fasterxml.jackson.databind.JsonNode optional(
            Supplier<com.fasterxml.jackson.databind.JsonNode> query) {
        try {
            return query.get();
        } catch (CommandNotFoundException e) {
            return com.fasterxml.jackson.databind.node.NullNode.getInstance();
        }
    }
}
