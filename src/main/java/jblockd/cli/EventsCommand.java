package jblockd.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.time.Duration;
import java.time.ZoneId;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import jblockd.client.EventStream;
import jblockd.client.QmpClient;
import jblockd.client.QmpEvent;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParentCommand;

/** {@code jblockctl events}: follows the event stream. */
@Command(name = "events", description = {"Print events as they arrive, one per line, until interrupted or the daemon quits.",
        "With --json, each event exactly as the daemon sent it."})
final class EventsCommand implements Callable<Integer> {
    private static final DateTimeFormatter TIME = DateTimeFormatter.ofPattern("HH:mm:ss.SSSSSS")
            .withZone(ZoneId.systemDefault());

    @ParentCommand
    JblockCtl top;

    @Option(names = {"-n", "--count"}, paramLabel = "N", description = "Exit after N events")
    int count;

    @Option(names = "--event", paramLabel = "NAME", description = "Only events with this name (repeatable)")
    List<String> names = new ArrayList<>();

    @Option(names = "--timeout", paramLabel = "SECONDS", description = "Exit (code 0) after this long")
    Double timeout;

    @Override
    public Integer call() throws InterruptedException {
        try (QmpClient qmp = top.connect(); EventStream events = qmp.events()) {
            long deadline = timeout == null ? Long.MAX_VALUE : System.nanoTime() + (long) (timeout * 1e9);
            int seen = 0;
            boolean shutdown = false;
            while (count <= 0 || seen < count) {
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    return 0;
                }
                QmpEvent ev = events.poll(Duration.ofNanos(Math.min(left, Duration.ofSeconds(1).toNanos())));
                if (ev == null) {
                    if (!qmp.isOpen()) {
                        if (shutdown) {
                            return 0;
                        }
                        throw new CliException("connection closed by the daemon", 2);
                    }
                    continue;
                }
                shutdown |= ev.name().equals(QmpEvent.SHUTDOWN);
                if (!names.isEmpty() && !names.contains(ev.name())) {
                    continue;
                }
                top.out.println(top.json ? wire(ev) : human(ev));
                top.out.flush();
                seen++;
            }
            return 0;
        }
    }

    /** The event as QMP sends it. */
    static String wire(QmpEvent ev) {
        ObjectNode o = new ObjectMapper().createObjectNode();
        o.put("event", ev.name());
        if (!ev.data().isEmpty()) {
            o.set("data", ev.data());
        }
        o.putObject("timestamp").put("seconds", ev.timestamp().getEpochSecond())
                .put("microseconds", ev.timestamp().getNano() / 1000);
        return o.toString();
    }

    /** {@code 12:00:01.123456  JOB_STATUS_CHANGE  id=drive0 status=running}. */
    static String human(QmpEvent ev) {
        StringBuilder sb = new StringBuilder(TIME.format(ev.timestamp())).append("  ").append(ev.name());
        Iterator<Map.Entry<String, JsonNode>> it = ev.data().properties().iterator();
        String sep = "  ";
        while (it.hasNext()) {
            Map.Entry<String, JsonNode> e = it.next();
            JsonNode v = e.getValue();
            sb.append(sep).append(e.getKey()).append('=').append(v.isTextual() ? v.asText() : v.toString());
            sep = " ";
        }
        return sb.toString();
    }
}
