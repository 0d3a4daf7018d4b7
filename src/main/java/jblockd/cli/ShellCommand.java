package jblockd.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.TreeSet;
import java.util.concurrent.Callable;
import jblockd.client.QmpClient;
import jblockd.client.QmpConnectionException;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParentCommand;

/**
 * {@code jblockctl shell}: an interactive QMP shell in the manner of QEMU's qmp-shell. On a
 * terminal, {@link LineEditor} gives line editing, Up/Down history and Tab completion of command
 * names; otherwise (piped input) lines are read as they come. History is kept in memory and
 * appended to {@code ~/.jblockctl_history}; {@code help [PREFIX]} and {@code PREFIX?} list
 * command names.
 */
@Command(name = "shell", description = {"Interactive QMP shell (like qmp-shell): 'CMD key=value ...' or a JSON request per line.",
        "On a terminal: line editing, Up/Down history, Tab completes command names.",
        "Built-ins: help [PREFIX] and PREFIX? (list commands), history, !N and !! (repeat), exit (or Ctrl-D).",
        "'quit' is sent to the daemon, as in qmp-shell. Events are printed as they arrive."})
final class ShellCommand implements Callable<Integer> {
    static final String HISTORY_ENV = "JBLOCKCTL_HISTORY";
    private static final int HISTORY_KEEP = 1000;

    @ParentCommand
    JblockCtl top;

    @Option(names = "--pretty", description = "Indent replies")
    boolean pretty;

    private final List<String> history = new ArrayList<>();
    private Path historyFile;
    private LineEditor editor;

    @Override
    public Integer call() throws IOException {
        historyFile = historyPath();
        loadHistory();
        boolean interactive = Terminal.stdoutIsTerminal();
        try (QmpClient qmp = top.connect();
             AutoCloseable events = qmp.onEvent(ev -> printLine(top.json ? EventsCommand.wire(ev)
                     : "event " + EventsCommand.human(ev)))) {
            TreeSet<String> commands = new TreeSet<>(qmp.queryCommands());
            if (interactive) {
                top.out.println("Connected to " + qmp.peer() + " (QEMU " + qmp.queryVersion()
                        + "). 'help' lists commands, Ctrl-D leaves.");
            }
            BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
            if (interactive) {
                editor = LineEditor.open(System.in, top.out, () -> commands, history);
            }
            int rc = 0;
            while (qmp.isOpen()) {
                String line;
                if (editor != null) {
                    line = editor.readLine("(jblockd) ");
                } else {
                    if (interactive) {
                        top.out.print("(jblockd) ");
                        top.out.flush();
                    }
                    line = in.readLine();
                }
                if (line == null) {
                    break;
                }
                line = line.strip();
                if (line.isEmpty() || line.startsWith("#")) {
                    continue;
                }
                if (line.equals("exit")) {
                    break;
                }
                if (line.startsWith("!")) {
                    String again = recall(line);
                    if (again == null) {
                        continue;
                    }
                    line = again;
                    printLine(line);
                }
                remember(line);
                if (line.equals("history")) {
                    for (int i = 0; i < history.size(); i++) {
                        printLine(String.format("%5d  %s", i + 1, history.get(i)));
                    }
                } else if (line.equals("help") || line.startsWith("help ") || line.endsWith("?")) {
                    String prefix = line.endsWith("?") ? line.substring(0, line.length() - 1).strip()
                            : line.substring(4).strip();
                    listCommands(commands, prefix);
                } else {
                    rc = send(qmp, line);
                }
            }
            return rc;
        } catch (QmpConnectionException e) {
            throw e;
        } catch (Exception e) {
            if (e instanceof RuntimeException re) {
                throw re;
            }
            throw new IOException(e.getMessage(), e);
        } finally {
            if (editor != null) {
                editor.close();
            }
        }
    }

    private int send(QmpClient qmp, String line) {
        ObjectNode req;
        try {
            req = ShellSyntax.parse(line);
        } catch (IllegalArgumentException e) {
            printLine("error: " + e.getMessage());
            return 0;
        }
        JsonNode reply = qmp.executeRequest(req, Duration.ofMinutes(10));
        printLine(pretty ? reply.toPrettyString() : reply.toString());
        return 0;
    }

    private void listCommands(TreeSet<String> commands, String prefix) {
        List<String> match = commands.stream().filter(c -> c.startsWith(prefix)).toList();
        if (match.isEmpty()) {
            printLine("no command starts with '" + prefix + "'");
            return;
        }
        int width = match.stream().mapToInt(String::length).max().orElse(0) + 2;
        int perLine = Math.max(1, 100 / width);
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < match.size(); i++) {
            sb.append(String.format("%-" + width + "s", match.get(i)));
            if ((i + 1) % perLine == 0 || i == match.size() - 1) {
                printLine(sb.toString().stripTrailing());
                sb.setLength(0);
            }
        }
    }

    private String recall(String line) {
        if (history.isEmpty()) {
            printLine("error: history is empty");
            return null;
        }
        if (line.equals("!!")) {
            return history.get(history.size() - 1);
        }
        try {
            int n = Integer.parseInt(line.substring(1));
            if (n >= 1 && n <= history.size()) {
                return history.get(n - 1);
            }
        } catch (NumberFormatException e) {
            // fall through
        }
        printLine("error: no history entry " + line);
        return null;
    }

    private synchronized void printLine(String s) {
        LineEditor e = editor;
        if (e != null) {
            e.printAbove(s);
        } else {
            top.out.println(s);
            top.out.flush();
        }
    }

    private static Path historyPath() {
        String env = System.getenv(HISTORY_ENV);
        if (env != null && !env.isBlank()) {
            return Path.of(env);
        }
        String home = System.getProperty("user.home");
        return home == null ? null : Path.of(home, ".jblockctl_history");
    }

    private void loadHistory() {
        if (historyFile == null || !Files.isReadable(historyFile)) {
            return;
        }
        try {
            List<String> lines = Files.readAllLines(historyFile, StandardCharsets.UTF_8);
            history.addAll(lines.subList(Math.max(0, lines.size() - HISTORY_KEEP), lines.size()));
        } catch (IOException e) {
            // an unreadable history is not worth failing the shell for
        }
    }

    private void remember(String line) {
        if (!history.isEmpty() && history.get(history.size() - 1).equals(line)) {
            return;
        }
        history.add(line);
        if (historyFile == null) {
            return;
        }
        try {
            Files.writeString(historyFile, line + "\n", StandardCharsets.UTF_8,
                    StandardOpenOption.CREATE, StandardOpenOption.APPEND);
        } catch (IOException e) {
            // keep going with the in-memory history
        }
    }
}
