package jblockd.job.mirror;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/**
 * block-stream and active block-commit while qemu-io writes through the daemon's NBD export:
 * the result must hold the pre-job guest-visible data plus exactly what the guest wrote (the same
 * qemu-io script applied to a flattened copy of the chain gives the expected image), so a stream
 * never overwrites a guest write with older backing data and the commit loses none.
 */
class StreamCommitGuestWritesIT {
    private static final long MIB = 1 << 20;
    private static final Duration T = Duration.ofSeconds(30);

    @TempDir
    Path dir;
    private Path base;
    private Path top;
    private Path expected;
    private Process writer;

    @BeforeEach
    void chain() throws Exception {
        Tools.assumeTools("qemu-img", "qemu-io");
        base = dir.resolve("base.qcow2");
        Path mid = dir.resolve("mid.qcow2");
        top = dir.resolve("top.qcow2");
        expected = dir.resolve("expected.raw");
        Tools.ok("qemu-img", "create", "-q", "-f", "qcow2", base.toString(), "32M");
        Tools.ok("qemu-img", "create", "-q", "-f", "qcow2", "-b", base.toString(), "-F", "qcow2", mid.toString());
        Tools.ok("qemu-img", "create", "-q", "-f", "qcow2", "-b", mid.toString(), "-F", "qcow2", top.toString());
        Tools.write(base, "qcow2", 0x11, 0, 12 * MIB);
        Tools.write(mid, "qcow2", 0x22, 8 * MIB, 12 * MIB);
        Tools.write(top, "qcow2", 0x33, 16 * MIB, 8 * MIB);
        Tools.ok("qemu-img", "convert", "-O", "raw", top.toString(), expected.toString());
    }

    @AfterEach
    void stopWriter() {
        if (writer != null) {
            writer.destroyForcibly();
        }
    }

    /** 4 KiB..64 KiB writes at unaligned places (inside stream chunks), a pause after each. */
    private static List<String> script(int n, long seed) {
        Random r = new Random(seed);
        List<String> cmds = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            long off = (long) r.nextInt(32 * 256 - 16) * 4096;
            int len = 4096 * (1 + r.nextInt(16));
            cmds.add("-c");
            cmds.add("write -P " + (1 + i % 250) + " " + off + " " + len);
            cmds.add("-c");
            cmds.add("sleep 2");
        }
        return cmds;
    }

    private static String[] qemuIo(String fmt, String target, List<String> script) {
        List<String> cmd = new ArrayList<>(List.of("qemu-io", "-f", fmt));
        cmd.addAll(script);
        cmd.add(target);
        return cmd.toArray(String[]::new);
    }

    private DaemonProcess daemon() throws Exception {
        return DaemonProcess.start(dir, "--drive", "id=drive0,file=" + top + ",format=qcow2",
                "--nbd-server", "addr.type=unix,addr.path=" + dir.resolve("nbd.sock"),
                "--export", "type=nbd,id=e0,node-name=drive0,name=disk,writable=on");
    }

    private void startWriter(List<String> script) throws Exception {
        writer = new ProcessBuilder(qemuIo("raw", "nbd+unix:///disk?socket=" + dir.resolve("nbd.sock"), script))
                .redirectErrorStream(true).redirectOutput(dir.resolve("writer.log").toFile()).start();
    }

    private void awaitWriter() throws Exception {
        assertThat(writer.waitFor(60, TimeUnit.SECONDS)).isTrue();
        String log = Files.readString(dir.resolve("writer.log"));
        assertThat(writer.exitValue()).as(log).isZero();
        assertThat(log).doesNotContain("error", "failed");
    }

    @Test
    void streamUnderGuestWritesKeepsEveryGuestWrite() throws Exception {
        List<String> script = script(400, 21);
        Tools.ok(qemuIo("raw", expected.toString(), script));
        try (DaemonProcess d = daemon(); QmpTestClient c = d.connect()) {
            startWriter(script);
            Thread.sleep(100);
            // slow enough that the guest writes land all over the stream's progress
            c.executeOk("block-stream", Map.of("device", "drive0", "speed", 24 * MIB));
            c.waitEvent("BLOCK_JOB_COMPLETED", T);
            assertThat(writer.isAlive()).as("the guest wrote during the whole stream").isTrue();
            awaitWriter();
            c.executeOk("quit");
        }
        Tools.ok("qemu-img", "check", top.toString());
        assertThat(Tools.ok("qemu-img", "info", top.toString())).doesNotContain("backing file:");
        Tools.ok("qemu-img", "compare", "-F", "raw", top.toString(), expected.toString());
    }

    @Test
    void activeCommitUnderGuestWritesLosesNothing() throws Exception {
        List<String> script = script(400, 22);
        Tools.ok(qemuIo("raw", expected.toString(), script));
        try (DaemonProcess d = daemon(); QmpTestClient c = d.connect()) {
            startWriter(script);
            Thread.sleep(100);
            c.executeOk("block-commit", Map.of("device", "drive0"));
            c.waitEvent("BLOCK_JOB_READY", T);
            Thread.sleep(100);
            assertThat(writer.isAlive()).isTrue();
            c.executeOk("block-job-complete", Map.of("device", "drive0"));
            c.waitEvent("BLOCK_JOB_COMPLETED", T);
            assertThat(c.executeOk("query-block").get(0).path("inserted").path("file").asText())
                    .isEqualTo(base.toString());
            awaitWriter();
            c.executeOk("quit");
        }
        Tools.ok("qemu-img", "check", base.toString());
        Tools.ok("qemu-img", "compare", "-F", "raw", base.toString(), expected.toString());
    }
}
