package jblockd.it;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

import com.fasterxml.jackson.databind.JsonNode;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/** Real-peer helpers shared by the adversarial ITs: run qemu-img/qemu-io, check images, kill -9. */
final class Peers {
    private Peers() {
    }

    static void assumeTools(String... tools) {
        for (String t : tools) {
            assumeTrue(Path.of("/usr/bin", t).toFile().canExecute(), t + " not installed");
        }
    }

    record Result(int rc, String out) {
    }

    static Result exec(String... cmd) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        assertThat(p.waitFor(60, TimeUnit.SECONDS)).as(String.join(" ", cmd)).isTrue();
        return new Result(p.exitValue(), out);
    }

    /** Runs a tool and asserts exit 0 (and, for qemu-io, that no command failed). */
    static String run(String... cmd) throws IOException, InterruptedException {
        Result r = exec(cmd);
        assertThat(r.rc()).as("%s%n%s", String.join(" ", cmd), r.out()).isZero();
        if (cmd[0].equals("qemu-io")) {
            // qemu-io exits 0 even when a command fails; its message says so.
            assertThat(r.out()).as(String.join(" ", cmd)).doesNotContain("failed")
                    .doesNotContain("Pattern verification");
        }
        return r.out();
    }

    /**
     * qemu-img check of a qcow2 image: no corruption. Leaked clusters are allowed only when
     * {@code leaksOk} (a kill -9 may leak, never corrupt). Returns the JSON report.
     */
    static JsonNode checkQcow2(Path img, boolean leaksOk) throws IOException, InterruptedException {
        Result r = exec("qemu-img", "check", "--output=json", img.toString());
        JsonNode j = QmpTestClient.json(r.out().substring(Math.max(0, r.out().indexOf('{'))));
        assertThat(j.path("corruptions").asLong(0)).as("corruptions in %s: %s", img, r.out()).isZero();
        assertThat(j.path("check-errors").asLong(0)).as("check errors in %s: %s", img, r.out()).isZero();
        if (!leaksOk) {
            assertThat(j.path("leaks").asLong(0)).as("leaks in %s: %s", img, r.out()).isZero();
            assertThat(r.rc()).as(r.out()).isZero();
        } else {
            // 0 clean, 3 leaks only
            assertThat(r.rc()).as(r.out()).isIn(0, 3);
        }
        return j;
    }

    /** The guest-visible content of an image as bytes (qemu-img convert to raw, -U: may be open). */
    static byte[] content(Path img, String format, Path scratch) throws IOException, InterruptedException {
        Path out = scratch.resolve("content-" + System.nanoTime() + ".raw");
        run("qemu-img", "convert", "-U", "-f", format, "-O", "raw", img.toString(), out.toString());
        try {
            return Files.readAllBytes(out);
        } finally {
            Files.deleteIfExists(out);
        }
    }

    /** SIGKILL, no shutdown hook, no flush: what a crash looks like to the files. */
    static void killNine(DaemonProcess d) throws InterruptedException {
        d.process().destroyForcibly();
        assertThat(d.process().waitFor(10, TimeUnit.SECONDS)).isTrue();
    }

    static List<String> list(String... s) {
        return List.of(s);
    }

    /**
     * Mounts a tmpfs of {@code mib} MiB at {@code dir} (created) for the full-disk tests, or
     * skips the test where mounting is not permitted. Undo with {@link #unmount}.
     */
    static void mountTmpfs(Path dir, int mib) throws IOException, InterruptedException {
        Files.createDirectories(dir);
        Result r = exec("mount", "-t", "tmpfs", "-o", "size=" + mib + "M", "tmpfs", dir.toString());
        org.junit.jupiter.api.Assumptions.assumeTrue(r.rc() == 0, "cannot mount a tmpfs here: " + r.out());
    }

    static void unmount(Path dir) throws IOException, InterruptedException {
        exec("umount", "-l", dir.toString());
    }

    /** Writes {@code mib} MiB of 0x01 bytes to {@code f}: what takes the space of a small filesystem. */
    static Path fill(Path f, int mib) throws IOException {
        byte[] one = new byte[1 << 20];
        java.util.Arrays.fill(one, (byte) 1);
        try (java.io.RandomAccessFile raf = new java.io.RandomAccessFile(f.toFile(), "rw")) {
            for (int i = 0; i < mib; i++) {
                raf.write(one);
            }
        }
        return f;
    }
}
