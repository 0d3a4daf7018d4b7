package jblockd.block.file;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import jblockd.block.Allocation;
import jblockd.block.DriverRegistry;
import jblockd.block.Extent;
import jblockd.block.ImageCreator;

/** The file driver against the real qemu-img / qemu-io on the same files. */
class FileDriverIT {
    private static final int MIB = 1 << 20;

    @TempDir
    Path dir;

    static String run(String... cmd) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        try {
            String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            assertThat(p.waitFor(60, TimeUnit.SECONDS)).as("%s finished", cmd[0]).isTrue();
            assertThat(p.exitValue()).as("%s: %s", String.join(" ", cmd), out).isZero();
            return out;
        } finally {
            p.destroyForcibly();
        }
    }

    static boolean present(String tool) {
        try {
            Process p = new ProcessBuilder(tool, "--version").redirectErrorStream(true).start();
            p.getInputStream().readAllBytes();
            return p.waitFor(10, TimeUnit.SECONDS) && p.exitValue() == 0;
        } catch (IOException | InterruptedException e) {
            return false;
        }
    }

    /** (start, length, zero) runs from qemu-img map, adjacent equal runs merged. */
    private static List<Extent> qemuMap(Path img) throws Exception {
        JsonNode map = new ObjectMapper().readTree(run("qemu-img", "map", "--output=json", "-f", "raw",
                img.toString()));
        List<Extent> out = new ArrayList<>();
        for (JsonNode e : map) {
            Allocation a = e.get("data").asBoolean() ? Allocation.DATA : Allocation.ZERO;
            assertThat(e.get("zero").asBoolean()).isEqualTo(a == Allocation.ZERO);
            merge(out, new Extent(e.get("start").asLong(), e.get("length").asLong(), a));
        }
        return out;
    }

    private static void merge(List<Extent> out, Extent e) {
        if (!out.isEmpty() && out.getLast().allocation() == e.allocation() && out.getLast().end() == e.offset()) {
            Extent last = out.removeLast();
            out.add(new Extent(last.offset(), last.length() + e.length(), e.allocation()));
        } else {
            out.add(e);
        }
    }

    private static byte[] filled(int len, int value) {
        byte[] b = new byte[len];
        Arrays.fill(b, (byte) value);
        return b;
    }

    @Test
    void seekDataAndHoleMatchQemuImgMapOfTheSameFile() throws Exception {
        assumeTrue(present("qemu-img") && present("qemu-io"), "qemu-img/qemu-io not installed");
        for (boolean direct : new boolean[] {false, true}) {
            Path img = dir.resolve(direct ? "sparse-direct.raw" : "sparse.raw");
            DriverRegistry.standard().creator("raw").orElseThrow().create(ImageCreator.Options.of(img, 16L * MIB));
            List<Extent> ours = new ArrayList<>();
            try (FileDriver f = FileDriver.open(img, false, direct, false)) {
                f.write(0, ByteBuffer.wrap(filled(65536, 0x11)), false);
                f.write(MIB, ByteBuffer.wrap(filled(4096, 0x22)), false);
                f.write(3 * MIB + 12288, ByteBuffer.wrap(filled(2 * MIB - 12288, 0x33)), false);
                f.discard(4 * MIB, MIB / 2);                        // punch inside the data
                f.write(8 * MIB, ByteBuffer.wrap(filled(MIB, 0x44)), false);
                f.writeZeroes(8 * MIB + 65536, 131072, true);       // punch via write-zeroes
                f.write(12 * MIB, ByteBuffer.wrap(filled(4096 * 3 + 17, 0x55)), true);
                f.flush();
                long pos = 0;
                while (pos < f.length()) {
                    Extent e = f.status(pos, f.length() - pos);
                    merge(ours, e);
                    pos = e.end();
                }
            }
            assertThat(ours).as("direct=%s", direct).isEqualTo(qemuMap(img));
            assertThat(ours).as("the layout we wrote").contains(
                    new Extent(4 * MIB, MIB / 2, Allocation.ZERO),
                    new Extent(8 * MIB + 65536, 131072, Allocation.ZERO));
            // The data itself, read by QEMU.
            String io = run("qemu-io", "-f", "raw",
                    "-c", "read -P 0x11 0 64k",
                    "-c", "read -P 0x22 1M 4k",
                    "-c", "read -P 0x33 " + (3 * MIB + 12288) + " " + (MIB - 12288),
                    "-c", "read -P 0 4M 512k",
                    "-c", "read -P 0x33 " + (4 * MIB + MIB / 2) + " 512k",
                    "-c", "read -P 0x44 8M 64k",
                    "-c", "read -P 0 " + (8 * MIB + 65536) + " 128k",
                    "-c", "read -P 0x44 " + (8 * MIB + 196608) + " " + (MIB - 196608),
                    "-c", "read -P 0x55 12M " + (4096 * 3 + 17),
                    img.toString());
            assertThat(io).doesNotContain("Pattern verification failed").doesNotContain("failed");
        }
    }

    @Test
    void qemuWrittenHolesAreSeenAsZero() throws Exception {
        assumeTrue(present("qemu-img") && present("qemu-io"), "qemu-img/qemu-io not installed");
        Path img = dir.resolve("q.raw");
        run("qemu-img", "create", "-f", "raw", img.toString(), "8M");
        run("qemu-io", "-f", "raw", "-c", "write -P 0x5a 2M 64k", "-c", "write -P 0x5b 6M 1M",
                "-c", "discard 6M 512k", img.toString());
        List<Extent> ours = new ArrayList<>();
        try (FileDriver f = FileDriver.open(img, true)) {
            long pos = 0;
            while (pos < f.length()) {
                Extent e = f.status(pos, f.length() - pos);
                merge(ours, e);
                pos = e.end();
            }
            ByteBuffer b = ByteBuffer.allocate(65536);
            f.read(2 * MIB, b);
            assertThat(b.array()).containsOnly((byte) 0x5a);
        }
        assertThat(ours).isEqualTo(qemuMap(img));
    }
}
