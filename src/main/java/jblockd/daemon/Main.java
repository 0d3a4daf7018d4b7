package jblockd.daemon;

import java.nio.file.Path;
import java.util.concurrent.Callable;

import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * Entry point of bin/jblockd (SPEC.md §1). picocli handles the command line's shape (help,
 * unknown options); the option values are QEMU keyval strings handed to {@link Daemon} in
 * command-line order, because order matters ({@code --blockdev} may name a node an earlier
 * option created). Any start-up error prints one line naming the option and exits 1; SIGTERM,
 * SIGINT and QMP {@code quit} shut down cleanly with exit code 0.
 */
@Command(name = "jblockd", mixinStandardHelpOptions = true, sortOptions = false,
        versionProvider = Main.VersionProvider.class,
        description = "A block-device daemon driven by QEMU's QMP protocol.")
public final class Main implements Callable<Integer> {

    private final Daemon.Builder builder = Daemon.builder();

    @Option(names = "--qmp", paramLabel = "unix:PATH|tcp:HOST:PORT",
            description = "A QMP server socket (UNIX sockets are created mode 0600). Repeatable.")
    void qmp(String v) {
        builder.qmp(v);
    }

    @Option(names = "--chardev", paramLabel = "socket,id=ID,path=PATH,server=on,wait=off",
            description = "A socket for --monitor (also host=H,port=P). Repeatable.")
    void chardev(String v) {
        builder.chardev(v);
    }

    @Option(names = "--monitor", paramLabel = "chardev=ID", description = "A QMP monitor on a --chardev.")
    void monitor(String v) {
        builder.monitor(v);
    }

    @Option(names = "--drive", paramLabel = "id=NAME,file=PATH,format=raw|qcow2[,...]",
            description = "A named device over an image: [,rerror=report|ignore|stop]"
                    + "[,werror=enospc|report|ignore|stop][,read-only=on][,cache=writeback|none|writethrough|directsync|unsafe][,discard=ignore|unmap][,node-name=N]."
                    + " file= is a filename as QEMU parses it: a path, file:PATH, json:{...}, blkdebug:CONFIG:IMAGE,"
                    + " null-co://, nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH, nbd:unix:PATH[:exportname=E],"
                    + " nbd:HOST:PORT[:exportname=E]; format probed when not given.")
    void drive(String v) {
        builder.drive(v);
    }

    @Option(names = "--blockdev", paramLabel = "KEYVAL|JSON", description = "A node, as blockdev-add takes it.")
    void blockdev(String v) {
        builder.blockdev(v);
    }

    @Option(names = "--nbd-server", paramLabel = "addr.type=inet,addr.host=H,addr.port=P",
            description = "Start the NBD server (or addr.type=unix,addr.path=P).")
    void nbdServer(String v) {
        builder.nbdServer(v);
    }

    @Option(names = "--export", paramLabel = "type=nbd,id=ID,node-name=NODE[,name=E][,writable=on][,writethrough=on]",
            description = "Export a node or device over NBD; writethrough=on: every write is durable before its reply.")
    void export(String v) {
        builder.export(v);
    }

    @Option(names = "--object", paramLabel = "TYPE,id=ID[,...]|JSON",
            description = "An object, as object-add takes it: secret,id=ID,data=..|file=..[,format=raw|base64];"
                    + " tls-creds-x509,id=ID,dir=DIR,endpoint=server|client[,verify-peer=on|off][,sanity-check=on|off];"
                    + " authz-simple,id=ID,identity=DN; authz-list (JSON form: policy, rules)."
                    + " --object help lists the types, --object TYPE,help a type's properties.")
    void object(String v) {
        String help = ObjectHelp.text(v);
        if (help != null) {
            objectHelp = help;
        } else {
            builder.object(v);
        }
    }

    /** What {@code --object help} prints (then the command exits 0, as qemu-storage-daemon). */
    private String objectHelp;

    /** Set in the daemon process that {@code --daemonize} starts (it must not fork again). */
    static final String DAEMONIZED_ENV = "JBLOCKD_DAEMONIZED";

    @Option(names = "--daemonize", description = "Run in the background; exit once every socket listens.")
    boolean daemonize;

    @Option(names = "--pidfile", paramLabel = "PATH", description = "Write the process id to PATH.")
    void pidfile(Path p) {
        builder.pidfile(p);
    }

    static final class VersionProvider implements CommandLine.IVersionProvider {
        @Override
        public String[] getVersion() {
            return new String[] {"jblockd " + Version.jblockd() + " (QMP API of QEMU "
                    + Version.QEMU_MAJOR + "." + Version.QEMU_MINOR + "." + Version.QEMU_MICRO + ")"};
        }
    }

    @Override
    public Integer call() throws Exception {
        if (objectHelp != null) {
            System.out.print(objectHelp);
            return 0;
        }
        boolean child = System.getenv(DAEMONIZED_ENV) != null;
        if (daemonize && !child) {
            return Daemonize.parent();
        }
        Daemon daemon = builder.build();
        try {
            daemon.start();
        } catch (Daemon.StartupException e) {
            System.err.println(e.line());
            return 1;
        }
        if (daemonize) {
            Daemonize.ready();
        }
        installSignalHandlers(daemon);
        Runtime.getRuntime().addShutdownHook(new Thread(daemon::close, "jblockd-shutdown-hook"));
        daemon.awaitTermination();
        return 0;
    }

    /**
     * SIGTERM/SIGINT: emit SHUTDOWN (reason host-signal, as QEMU does) and shut down, exiting 0
     * like QEMU rather than with the JVM's 128+signal. Falls back to the shutdown hook when
     * sun.misc.Signal is unavailable.
     */
    @SuppressWarnings("removal")
    private static void installSignalHandlers(Daemon daemon) {
        for (String sig : new String[] {"TERM", "INT"}) {
            try {
                sun.misc.Signal.handle(new sun.misc.Signal(sig), s -> daemon.shutdownOnSignal());
            } catch (IllegalArgumentException | UnsupportedOperationException | LinkageError e) {
                // the shutdown hook still closes everything
            }
        }
    }

    public static void main(String[] args) {
        CommandLine cl = new CommandLine(new Main());
        cl.setOverwrittenOptionsAllowed(true);
        cl.setParameterExceptionHandler((ex, a) -> {
            System.err.println("jblockd: " + ex.getMessage());
            System.err.println("Try 'jblockd --help' for more information.");
            return 1;
        });
        cl.setExecutionExceptionHandler((ex, c, r) -> {
            System.err.println("jblockd: " + ex);
            return 1;
        });
        int code = cl.execute(args);
        System.exit(code);
    }
}
