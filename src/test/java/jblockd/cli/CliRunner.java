package jblockd.cli;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

/**
 * Runs jblockctl as a user would: a separate {@code java} process on the built classes, with
 * its own stdin/stdout/stderr and exit code.
 */
final class CliRunner {
    static final String MAIN = "jblockd.cli.JblockCtl";

    /** What a finished jblockctl printed and returned. */
    record Result(int code, String out, String err) {
        List<String> outLines() {
            return out.isEmpty() ? List.of() : Arrays.asList(out.split("\r?\n"));
        }
    }

    private CliRunner() {
    }

    /** {@code java -cp ... jblockd.cli.JblockCtl ARGS}. */
    static List<String> command(List<String> args) throws IOException {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        // C1 only and the serial GC: jblockctl is short-lived, and the test machine is shared
        List<String> cmd = new ArrayList<>(List.of(java, "--enable-native-access=ALL-UNNAMED",
                "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-cp", classpath(),
                MAIN));
        cmd.addAll(args);
        return cmd;
    }

    /** The packaged jar plus its runtime classpath under Failsafe, else this JVM's classpath. */
    static String classpath() throws IOException {
        String jar = System.getProperty("jblockd.jar");
        String cpFile = System.getProperty("jblockd.classpath.file");
        if (jar != null && cpFile != null && Files.exists(Path.of(jar)) && Files.exists(Path.of(cpFile))) {
            return jar + ":" + Files.readString(Path.of(cpFile)).strip();
        }
        return System.getProperty("java.class.path");
    }

    static Result run(Map<String, String> env, String stdin, String... args) throws IOException, InterruptedException {
        Process p = start(env, args);
        CompletableFuture<String> out = drain(p.getInputStream());
        CompletableFuture<String> err = drain(p.getErrorStream());
        if (stdin != null) {
            p.getOutputStream().write(stdin.getBytes(StandardCharsets.UTF_8));
        }
        p.getOutputStream().close();
        return finish(p, out, err, 60);
    }

    static Result run(String... args) throws IOException, InterruptedException {
        return run(Map.of(), null, args);
    }

    static Process start(Map<String, String> env, String... args) throws IOException {
        ProcessBuilder pb = new ProcessBuilder(command(List.of(args)));
        pb.environment().remove(JblockCtl.SOCKET_ENV);
        pb.environment().putAll(env);
        return pb.start();
    }

    static CompletableFuture<String> drain(InputStream in) {
        CompletableFuture<String> f = new CompletableFuture<>();
        Thread.ofVirtual().start(() -> {
            try {
                f.complete(new String(in.readAllBytes(), StandardCharsets.UTF_8));
            } catch (IOException e) {
                f.completeExceptionally(e);
            }
        });
        return f;
    }

    static Result finish(Process p, CompletableFuture<String> out, CompletableFuture<String> err, int seconds)
            throws InterruptedException {
        if (!p.waitFor(seconds, TimeUnit.SECONDS)) {
            // A hang is rare and must be diagnosable from the CI log: the client's threads, and
            // what it had printed so far, before it is killed.
            String threads = threadDump(p.pid());
            p.destroyForcibly();
            p.waitFor(5, TimeUnit.SECONDS);
            throw new AssertionError("jblockctl did not finish within " + seconds + " s\nstdout: "
                    + out.getNow("?") + "\nstderr: " + err.getNow("?") + "\nthreads:\n" + threads);
        }
        return new Result(p.exitValue(), out.join(), err.join());
    }

    /** {@code jcmd PID Thread.print} of the JDK running the tests, or why it could not be had. */
    private static String threadDump(long pid) {
        try {
            Path jcmd = Path.of(System.getProperty("java.home"), "bin", "jcmd");
            Process j = new ProcessBuilder(jcmd.toString(), Long.toString(pid), "Thread.print")
                    .redirectErrorStream(true).start();
            CompletableFuture<String> dump = drain(j.getInputStream());
            if (!j.waitFor(20, TimeUnit.SECONDS)) {
                j.destroyForcibly();
                return "(jcmd timed out)";
            }
            return dump.join();
        } catch (IOException | InterruptedException e) {
            return "(no thread dump: " + e + ")";
        }
    }
}
