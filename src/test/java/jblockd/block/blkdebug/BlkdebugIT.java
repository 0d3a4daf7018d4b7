package jblockd.block.blkdebug;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.BlockNode;
import jblockd.block.DriverRegistry;
import jblockd.block.ImageCreator;
import jblockd.block.IoError;
import jblockd.block.NodeGraph;

/**
 * The same blkdebug config file and the same request sequence through qemu-io
 * ({@code blkdebug:CONFIG:IMAGE}, raw format) and through our raw → blkdebug → file graph give
 * the same outcome per request (ok or the same strerror).
 */
class BlkdebugIT {
    @TempDir
    Path dir;

    private static boolean qemuIoPresent() {
        try {
            Process p = new ProcessBuilder("qemu-io", "--version").redirectErrorStream(true).start();
            p.getInputStream().readAllBytes();
            return p.waitFor(10, TimeUnit.SECONDS) && p.exitValue() == 0;
        } catch (IOException | InterruptedException e) {
            return false;
        }
    }

    /** Requests as qemu-io commands: "read OFF LEN" / "write OFF LEN". */
    private List<String> qemu(Path cfg, Path img, List<String> cmds) throws Exception {
        List<String> argv = new ArrayList<>(List.of("qemu-io", "-f", "raw"));
        for (String c : cmds) {
            argv.add("-c");
            argv.add(c);
        }
        argv.add("blkdebug:" + cfg + ":" + img);
        Process p = new ProcessBuilder(argv).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(p.waitFor(60, TimeUnit.SECONDS)).isTrue();
        List<String> outcomes = new ArrayList<>();
        for (String line : out.split("\n")) {
            if (line.startsWith("read failed: ") || line.startsWith("write failed: ")) {
                outcomes.add(line.substring(line.indexOf(": ") + 2));
            } else if (line.startsWith("read ") || line.startsWith("wrote ")) {
                outcomes.add("ok");
            }
        }
        assertThat(outcomes).as(out).hasSize(cmds.size());
        return outcomes;
    }

    private List<String> ours(Path cfg, Path img, List<String> cmds) throws Exception {
        NodeGraph graph = new NodeGraph(DriverRegistry.standard());
        try {
            BlockNode disk = graph.add(graph.imageOptions(Path.of("blkdebug:" + cfg + ":" + img), "raw",
                    false, false, null));
            List<String> outcomes = new ArrayList<>();
            for (String c : cmds) {
                String[] f = c.split(" ");
                long off = Long.parseLong(f[1]);
                int len = Integer.parseInt(f[2]);
                try {
                    if (f[0].equals("read")) {
                        disk.read(off, ByteBuffer.allocate(len));
                    } else {
                        disk.write(off, ByteBuffer.allocate(len), false);
                    }
                    outcomes.add("ok");
                } catch (IoError e) {
                    outcomes.add(e.getMessage());
                }
            }
            return outcomes;
        } finally {
            graph.closeAll();
        }
    }

    private void compare(String config, List<String> cmds, List<String> expected) throws Exception {
        assumeTrue(qemuIoPresent(), "qemu-io not installed");
        Path cfg = dir.resolve("rules.conf");
        Files.writeString(cfg, config);
        Path img = dir.resolve("disk.raw");
        DriverRegistry.standard().creator("raw").orElseThrow().create(ImageCreator.Options.of(img, 4 << 20));
        List<String> q = qemu(cfg, img, cmds);
        assertThat(q).as("qemu-io").isEqualTo(expected);
        assertThat(ours(cfg, img, cmds)).as("jblockd").isEqualTo(q);
    }

    @Test
    void sectorRuleOnReadsMatchesQemu() throws Exception {
        compare("""
                [inject-error]
                event = "read_aio"
                sector = "2048"
                """,
                List.of("read 1048576 1", "read 1048575 1", "read 1049087 1", "read 1048064 1024", "read 0 512",
                        "read 0 4194304"),
                List.of("Input/output error", "ok", "ok", "Input/output error", "ok", "Input/output error"));
    }

    @Test
    void onceEnospcWriteRuleMatchesQemu() throws Exception {
        compare("""
                [inject-error]
                event = "write_aio"
                errno = "28"
                once = "on"
                """,
                List.of("read 0 512", "write 0 512", "write 0 512", "write 4096 512", "read 0 512"),
                List.of("ok", "No space left on device", "ok", "ok", "ok"));
    }

    @Test
    void persistentWriteRuleWithSectorMatchesQemuForWrites() throws Exception {
        compare("""
                # comments are fine
                [inject-error]
                event = "write_aio"
                errno = "5"
                sector = "8"
                """,
                List.of("write 0 4096", "write 4096 512", "write 4096 512", "write 4608 512", "write 0 8192"),
                List.of("ok", "Input/output error", "Input/output error", "ok", "Input/output error"));
    }

    @Test
    void setStateMachineMatchesQemu() throws Exception {
        compare("""
                [set-state]
                event = "write_aio"
                state = "1"
                new_state = "2"

                [inject-error]
                event = "read_aio"
                state = "2"
                errno = "5"
                sector = "0"
                """,
                List.of("read 0 512", "read 0 512", "write 4096 512", "read 4096 512", "read 0 512", "read 0 4096"),
                List.of("ok", "ok", "ok", "ok", "Input/output error", "Input/output error"));
    }
}
