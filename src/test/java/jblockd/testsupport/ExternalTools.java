package jblockd.testsupport;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * Runs the real peers (qemu-img, qemu-io, nbdinfo, ...) from tests: a missing tool skips the
 * test, a failing one fails it with its output. Test packages may extend this class to reach
 * the methods under a local name.
 */
public class ExternalTools {
    /** Exit code and combined stdout/stderr of one run. */
    public record Result(int exit, String out) {
    }

    protected ExternalTools() {
    }

    public static boolean present(String tool) {
        for (String dir : System.getenv().getOrDefault("PATH", "/usr/bin").split(":")) {
            if (Files.isExecutable(Path.of(dir, tool))) {
                return true;
            }
        }
        return false;
    }

    public static void assumeTools(String... tools) {
        for (String t : tools) {
            assumeTrue(present(t), t + " not installed");
        }
    }

    /** Runs with a 60 s limit (a hung peer fails the test instead of the whole build). */
    public static Result run(String... cmd) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(List.of(cmd)).redirectErrorStream(true).start();
        byte[] out = p.getInputStream().readAllBytes();
        if (!p.waitFor(60, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            throw new IOException("timeout: " + String.join(" ", cmd));
        }
        return new Result(p.exitValue(), new String(out, StandardCharsets.UTF_8));
    }

    /** Runs and fails the test on a non-zero exit. */
    public static String ok(String... cmd) throws IOException, InterruptedException {
        Result r = run(cmd);
        if (r.exit() != 0) {
            throw new AssertionError(String.join(" ", cmd) + " -> " + r.exit() + ": " + r.out());
        }
        return r.out();
    }
}
