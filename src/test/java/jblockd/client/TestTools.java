package jblockd.client;

import java.io.File;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;

/** Real-tool helpers shared by the client and CLI tests. */
public final class TestTools {
    private TestTools() {
    }

    public static boolean onPath(String tool) {
        for (String dir : System.getenv().getOrDefault("PATH", "").split(File.pathSeparator)) {
            if (Files.isExecutable(Path.of(dir, tool))) {
                return true;
            }
        }
        return false;
    }

    /**
     * A raw image of {@code size} bytes: every MiB but the holes carries a pattern byte
     * {@code 0x10 + index}; MiB index 2 (when present) is left a hole.
     */
    public static Path patternedRaw(Path file, long size) throws IOException {
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
            f.setLength(size);
            byte[] mib = new byte[1 << 20];
            for (long off = 0, i = 0; off < size; off += mib.length, i++) {
                if (i == 2) {
                    continue;
                }
                Arrays.fill(mib, (byte) (0x10 + i));
                f.seek(off);
                f.write(mib, 0, (int) Math.min(mib.length, size - off));
            }
        }
        return file;
    }

    /** Runs a tool, returns its exit code; output goes to {@code out} (may be null). */
    public static int run(List<String> cmd, StringBuilder out) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String text = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        if (!p.waitFor(60, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            throw new IOException("timeout: " + cmd);
        }
        if (out != null) {
            out.append(text);
        }
        return p.exitValue();
    }

    /** {@code qemu-img compare A B}: 0 identical, 1 different. */
    public static int qemuImgCompare(Path a, Path b) throws IOException, InterruptedException {
        List<String> cmd = new ArrayList<>(List.of("qemu-img", "compare", "-U", a.toString(), b.toString()));
        StringBuilder out = new StringBuilder();
        int rc = run(cmd, out);
        if (rc > 1) {
            throw new IOException("qemu-img compare failed: " + out);
        }
        return rc;
    }
}
