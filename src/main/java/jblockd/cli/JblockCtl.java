package jblockd.cli;

import java.io.IOException;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import jblockd.client.QmpClient;
import jblockd.client.QmpConnectionException;
import jblockd.client.QmpException;
import jblockd.daemon.Version;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.ScopeType;

/**
 * {@code jblockctl}: the command line of jblockd's users. Talks QMP to a running daemon (or to
 * QEMU) through {@link QmpClient}; job commands follow their job with a live progress bar.
 *
 * <p>Exit codes: 0 success; 1 the job failed or was cancelled, or the daemon refused the
 * command (printed as {@code jblockctl: CLASS: desc}); 2 usage or connection error.
 */
@Command(name = "jblockctl", mixinStandardHelpOptions = true, versionProvider = JblockCtl.VersionProvider.class,
        sortOptions = false, usageHelpAutoWidth = true,
        description = {"Control jblockd (or QEMU) over QMP: live block jobs with progress, devices, exports, dirty bitmaps,"
                + " events.",
                "Sizes and speeds take K, M, G, T suffixes (powers of 1024): 512K, 50M, 2G."},
        footer = {"", "Exit codes: 0 success, 1 job failed or cancelled / command refused, 2 usage or connection error."},
        subcommands = {BackupCommand.class, PullCommand.class, MirrorCommand.class, MigrateCommand.class, StreamCommand.class, CommitCommand.class,
                JobsCommand.class, WatchCommand.class,
                JobVerbCommands.Pause.class, JobVerbCommands.Resume.class, JobVerbCommands.Cancel.class,
                JobVerbCommands.Complete.class, JobVerbCommands.SetSpeed.class, JobVerbCommands.Finalize.class,
                JobVerbCommands.Dismiss.class,
                BitmapCommand.class, InfoCommand.class, EventsCommand.class, QmpCommand.class, ShellCommand.class,
                CommandLine.HelpCommand.class})
public final class JblockCtl implements Runnable {
    static final String SOCKET_ENV = "JBLOCKD_SOCKET";

    @Option(names = "--socket", scope = ScopeType.INHERIT, paramLabel = "PATH|tcp:HOST:PORT",
            description = "QMP socket of the daemon (default: $" + SOCKET_ENV + ")")
    String socket;

    @Option(names = "--json", scope = ScopeType.INHERIT,
            description = "Machine-readable output: one JSON object per line")
    boolean json;

    PrintStream out = System.out;
    PrintStream err = System.err;

    @Override
    public void run() {
        throw new CommandLine.ParameterException(new CommandLine(this), "missing command (try 'jblockctl --help')");
    }

    /** Connects to {@code --socket} or {@code $JBLOCKD_SOCKET}; failures are exit code 2. */
    QmpClient connect() {
        String address = socket != null ? socket : System.getenv(SOCKET_ENV);
        if (address == null || address.isBlank()) {
            throw new CliException("no QMP socket: give --socket PATH (or tcp:HOST:PORT) or set " + SOCKET_ENV, 2);
        }
        try {
            return QmpClient.connect(address);
        } catch (IOException | IllegalArgumentException e) {
            throw new CliException("cannot connect to " + address + ": " + message(e), 2);
        } catch (QmpConnectionException e) {
            throw new CliException("cannot talk QMP to " + address + ": " + e.getMessage(), 2);
        }
    }

    /** The progress display for jobs started by this command. */
    ProgressView progressView() {
        return ProgressView.forOutput(json, out, true);
    }

    /** The progress display for jobs that were already running. */
    ProgressView attachedView() {
        return ProgressView.forOutput(json, out, false);
    }

    public static void main(String[] args) {
        System.exit(run(args, System.out, System.err));
    }

    /** Runs jblockctl with the given streams; returns the exit code. */
    public static int run(String[] args, PrintStream out, PrintStream err) {
        JblockCtl top = new JblockCtl();
        top.out = out;
        top.err = err;
        CommandLine cl = new CommandLine(top);
        for (CommandLine sub : cl.getSubcommands().values()) {
            sub.getCommandSpec().mixinStandardHelpOptions(true); // 'jblockctl backup --help'
        }
        cl.setOut(new PrintWriter(out, true, StandardCharsets.UTF_8));
        cl.setErr(new PrintWriter(err, true, StandardCharsets.UTF_8));
        cl.setParameterExceptionHandler((ex, a) -> {
            err.println("jblockctl: " + ex.getMessage());
            CommandLine c = ex.getCommandLine();
            err.println("Try '" + c.getCommandSpec().qualifiedName() + " --help' for more information.");
            return 2;
        });
        cl.setExecutionExceptionHandler((ex, c, parsed) -> {
            if (ex instanceof QmpException q) {
                err.println("jblockctl: " + q.wireClass() + ": " + q.desc());
                return 1;
            }
            if (ex instanceof CliException ce) {
                err.println("jblockctl: " + ce.getMessage());
                return ce.exitCode();
            }
            if (ex instanceof QmpConnectionException || ex instanceof IOException) {
                err.println("jblockctl: " + ex.getMessage());
                return 2;
            }
            if (ex instanceof InterruptedException) {
                err.println("jblockctl: interrupted");
                return 2;
            }
            err.println("jblockctl: internal error: " + ex);
            return 2;
        });
        return cl.execute(args);
    }

    static String message(Throwable e) {
        String m = e.getMessage();
        return m == null || m.isBlank() ? e.getClass().getSimpleName() : m;
    }

    /** {@code jblockctl --version}. */
    static final class VersionProvider implements CommandLine.IVersionProvider {
        @Override
        public String[] getVersion() {
            return new String[] {"jblockctl " + Version.jblockd()};
        }
    }
}
