package jblockd.job.mirror;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

/** Runs the real QEMU tools for the mirror/stream/commit tests. */
final class Tools {
    record Result(int exit, String out) {
    }

    private Tools() {
    }

    static boolean present(String tool) {
        for (String dir : System.getenv().getOrDefault("PATH", "/usr/bin").split(":")) {
            if (Files.isExecutable(Path.of(dir, tool))) {
                return true;
            }
        }
        return false;
    }

    static void assumeTools(String... tools) {
        for (String t : tools) {
            assumeTrue(present(t), t + " not installed");
        }
    }

    static Result run(String... cmd) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(List.of(cmd)).redirectErrorStream(true).start();
        byte[] out = p.getInputStream().readAllBytes();
        if (!p.waitFor(60, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            throw new IOException("timeout: " + String.join(" ", cmd));
        }
        return new Result(p.exitValue(), new String(out, StandardCharsets.UTF_8));
    }

    static String ok(String... cmd) throws IOException, InterruptedException {
        Result r = run(cmd);
        if (r.exit() != 0) {
            throw new AssertionError(String.join(" ", cmd) + " -> " + r.exit() + ": " + r.out());
        }
        return r.out();
    }

    /** qemu-io -c 'write -P value off len' on an image. */
    static void write(Path img, String fmt, int pattern, long off, long len) throws Exception {
        ok("qemu-io", "-f", fmt, "-c", "write -P " + pattern + " " + off + " " + len, img.toString());
    }

    /** Asserts with qemu-io that the range holds the pattern. */
    static void assertPattern(Path img, String fmt, int pattern, long off, long len) throws Exception {
        Result r = run("qemu-io", "-r", "-f", fmt, "-c", "read -P " + pattern + " " + off + " " + len, img.toString());
        if (r.exit() != 0 || r.out().contains("Pattern verification failed")) {
            throw new AssertionError("pattern " + pattern + " at " + off + "+" + len + " of " + img + ": " + r.out());
        }
    }
}
