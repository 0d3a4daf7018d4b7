package jblockd.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.Callable;
import jblockd.client.QmpClient;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.ParentCommand;

/** {@code jblockctl qmp 'JSON'} / {@code jblockctl qmp CMD key=value ...}: passthrough. */
@Command(name = "qmp", description = {"Send one QMP request and print the reply as the daemon sent it.",
        "REQUEST is a JSON object ('{\"execute\":\"query-status\"}') or qmp-shell syntax: CMD key=value ...",
        "Exit code 1 when the reply is an error."})
final class QmpCommand implements Callable<Integer> {
    @ParentCommand
    JblockCtl top;

    @Parameters(arity = "1..*", paramLabel = "REQUEST")
    List<String> request;

    @Option(names = "--pretty", description = "Indent the reply")
    boolean pretty;

    @Override
    public Integer call() throws Exception {
        ObjectNode req;
        try {
            req = ShellSyntax.parse(String.join(" ", request));
        } catch (IllegalArgumentException e) {
            throw new CliException(e.getMessage(), 2);
        }
        try (QmpClient qmp = top.connect()) {
            JsonNode reply = qmp.executeRequest(req, Duration.ofMinutes(10));
            top.out.println(pretty ? reply.toPrettyString() : reply.toString());
            JsonNode err = reply.get("error");
            if (err != null) {
                top.err.println("jblockctl: " + err.path("class").asText() + ": " + err.path("desc").asText());
                return 1;
            }
            return 0;
        }
    }
}
