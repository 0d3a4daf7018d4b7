package jblockd.compose;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import jblockd.compose.Schedule.LayerWrite;
import jblockd.compose.Schedule.Setup;
import jblockd.testsupport.ExternalTools;

/** The schedule's image files, made and read with the real qemu-img and qemu-io. */
final class Images {
    private Images() {
    }

    static Path file(Path dir, String layer, String format) {
        return dir.resolve(layer + "." + format);
    }

    /** Creates the chain bottom first (backing names absolute, as QEMU stores what it is given) and fills it. */
    static void create(Setup s, Path dir) throws IOException, InterruptedException {
        List<String> layers = s.layers();
        for (int i = layers.size() - 1; i >= 0; i--) {
            List<String> cmd = new ArrayList<>(List.of("qemu-img", "create", "-q", "-f", s.format()));
            if (s.format().equals("qcow2")) {
                cmd.addAll(List.of("-o", "cluster_size=" + s.clusterSize()));
                if (i < layers.size() - 1) {
                    cmd.addAll(List.of("-b", file(dir, layers.get(i + 1), s.format()).toString(), "-F", s.format()));
                }
            }
            cmd.add(file(dir, layers.get(i), s.format()).toString());
            cmd.add(Long.toString(s.size()));
            ExternalTools.ok(cmd.toArray(String[]::new));
        }
        // bottom first: a partial-cluster write into an overlay copies its backing data up then
        for (String layer : layers.reversed()) {
            List<String> cmd = new ArrayList<>(List.of("qemu-io", "-f", s.format()));
            for (LayerWrite w : s.writes()) {
                if (w.layer().equals(layer)) {
                    cmd.addAll(List.of("-c", w.qemuIoCommand()));
                }
            }
            cmd.add(file(dir, layer, s.format()).toString());
            String out = ExternalTools.ok(cmd.toArray(String[]::new));
            if (out.contains("failed")) { // qemu-io exits 0 when a command fails
                throw new AssertionError(String.join(" ", cmd) + ": " + out);
            }
        }
    }

    /** The guest-visible disk the setup writes make: each layer's writes over the ones below. */
    static byte[] composed(Setup s) {
        byte[] disk = new byte[(int) s.size()];
        // writes are listed bottom layer first, so a later write is always the upper one
        for (LayerWrite w : s.writes()) {
            java.util.Arrays.fill(disk, (int) w.offset(), (int) w.offset() + w.length(),
                    (byte) (w.pattern() < 0 ? 0 : w.pattern()));
        }
        return disk;
    }

    /**
     * The image as a guest would read it, through its backing chain ({@code qemu-img convert -U}:
     * the daemon may hold the lock; callers flush first).
     */
    static byte[] readComposed(Path image, String format, Path scratchDir) throws IOException, InterruptedException {
        Path raw = Files.createTempFile(scratchDir, "composed", ".raw");
        try {
            ExternalTools.ok("qemu-img", "convert", "-U", "-f", format, "-O", "raw", image.toString(), raw.toString());
            return Files.readAllBytes(raw);
        } finally {
            Files.deleteIfExists(raw);
        }
    }

    /** {@code qemu-img check} output when it finds a problem, else null. */
    static String checkProblem(Path qcow2) throws IOException, InterruptedException {
        ExternalTools.Result r = ExternalTools.run("qemu-img", "check", "-q", qcow2.toString());
        return r.exit() == 0 ? null : "qemu-img check " + qcow2.getFileName() + " -> " + r.exit() + ": " + r.out();
    }
}
