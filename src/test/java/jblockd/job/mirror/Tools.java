package jblockd.job.mirror;


import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.ExternalTools;

/** Runs the real QEMU tools for the mirror/stream/commit tests. */
final class Tools extends ExternalTools {
    private Tools() {
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

    /** qemu-img create: a qcow2 {@code base} of {@code size}, {@code mid} over it, {@code top} over mid. */
    static void qcow2Chain(Path base, Path mid, Path top, String size) throws Exception {
        ok("qemu-img", "create", "-q", "-f", "qcow2", base.toString(), size);
        qcow2Overlay(base, mid);
        qcow2Overlay(mid, top);
    }

    /** qemu-img create: a qcow2 {@code overlay} over the qcow2 {@code backing}, of its size. */
    static void qcow2Overlay(Path backing, Path overlay) throws Exception {
        ok("qemu-img", "create", "-q", "-f", "qcow2", "-b", backing.toString(), "-F", "qcow2", overlay.toString());
    }

    /**
     * Starts QEMU 7.2 as the reference peer ({@code -M none}, QMP on the unix socket {@code sock},
     * the image as {@code if=none} drive0, output to {@code log}) and waits at most 20 s for the
     * socket to appear.
     */
    static Process startQemu(Path sock, Path log, Path image, String format) throws IOException {
        Process p = new ProcessBuilder("qemu-system-x86_64", "-M", "none", "-nodefaults", "-display", "none",
                "-qmp", "unix:" + sock + ",server=on,wait=off",
                "-drive", "if=none,id=drive0,file=" + image + ",format=" + format)
                .redirectErrorStream(true).redirectOutput(log.toFile()).start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (!Files.exists(sock) && System.nanoTime() < deadline) {
            try {
                Thread.sleep(20);
            } catch (InterruptedException e) {
                p.destroyForcibly();
                Thread.currentThread().interrupt();
                throw new java.io.InterruptedIOException("waiting for " + sock);
            }
        }
        return p;
    }

    /** The qemu-io command line that runs {@code script} (its -c options) on {@code target}. */
    static String[] qemuIo(String fmt, String target, List<String> script) {
        List<String> cmd = new ArrayList<>(List.of("qemu-io", "-f", fmt));
        cmd.addAll(script);
        cmd.add(target);
        return cmd.toArray(String[]::new);
    }

    /** The daemon with {@code drive} as drive0, exported writable as "disk" on {@code dir}/nbd.sock. */
    static DaemonProcess daemonWithExport(Path dir, String drive) throws Exception {
        return DaemonProcess.start(dir, "--drive", drive,
                "--nbd-server", "addr.type=unix,addr.path=" + dir.resolve("nbd.sock"),
                "--export", "type=nbd,id=e0,node-name=drive0,name=disk,writable=on");
    }

    /** The guest: qemu-io running {@code script} through that export, output in {@code dir}/writer.log. */
    static Process startGuestWriter(Path dir, List<String> script) throws IOException {
        return new ProcessBuilder(qemuIo("raw", "nbd+unix:///disk?socket=" + dir.resolve("nbd.sock"), script))
                .redirectErrorStream(true).redirectOutput(dir.resolve("writer.log").toFile()).start();
    }
}
