package jblockd.daemon;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * {@code --daemonize} as qemu-storage-daemon does it (os_daemonize(): the parent exits 0 once
 * the child has opened every socket, or with the child's error and 1). A JVM cannot fork, so
 * the parent starts the same command line again with {@link Main#DAEMONIZED_ENV} set; the
 * child starts the daemon, leaves the parent's session (setsid) and says "ready" on its
 * stdout, a pipe the parent waits on. Start-up errors reach the parent through the child's
 * stderr and are printed by it. After that the child's stdio lead nowhere (QEMU points them at
 * /dev/null); the pidfile, when asked for, holds the child's pid.
 */
final class Daemonize {
    private static final String READY = "jblockd-ready";

    private Daemonize() {
    }

    /** Starts the daemon process and waits for its word; returns the parent's exit code. */
    static int parent() throws IOException, InterruptedException {
        ProcessHandle.Info info = ProcessHandle.current().info();
        List<String> cmd = new ArrayList<>();
        cmd.add(info.command().orElseThrow(() -> new IOException("cannot tell the java command")));
        cmd.addAll(List.of(info.arguments().orElseThrow(() -> new IOException("cannot tell the arguments"))));
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")));
        pb.environment().put(Main.DAEMONIZED_ENV, "1");
        Process p = pb.start();
        try (BufferedReader out = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8))) {
            String line;
            while ((line = out.readLine()) != null) {
                if (line.equals(READY)) {
                    return 0;
                }
            }
        }
        // no word: start-up failed; its one-line reason is on its stderr
        System.err.print(new String(p.getErrorStream().readAllBytes(), StandardCharsets.UTF_8));
        int code = p.waitFor();
        return code == 0 ? 1 : code;
    }

    /** In the daemon process, once every socket listens: detach and tell the parent. */
    static void ready() {
        try {
            Linker linker = Linker.nativeLinker();
            MethodHandle setsid = linker.downcallHandle(linker.defaultLookup().find("setsid").orElseThrow(),
                    FunctionDescriptor.of(ValueLayout.JAVA_INT));
            int ignored = (int) setsid.invokeExact();
        } catch (Throwable e) {
            // still a daemon, only in the parent's session (a terminal's signals may reach it)
        }
        System.out.println(READY);
        System.out.flush();
        System.out.close();
        System.err.close();
    }
}
