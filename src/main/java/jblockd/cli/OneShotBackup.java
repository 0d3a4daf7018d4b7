package jblockd.cli;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import jblockd.block.BlockNode;
import jblockd.block.DriverRegistry;
import jblockd.block.NodeGraph;
import jblockd.client.Job;
import jblockd.client.QmpClient;
import jblockd.daemon.Daemon;
import jblockd.qapi.NewImageMode;

/**
 * {@code jblockctl backup --image SOURCE TARGET} and {@code --demo}: the whole product in one
 * command. An embedded {@link Daemon} opens SOURCE as device {@code drive0} with its QMP socket in
 * a private temp directory; the backup runs through the same client API and progress display as
 * against a running daemon; then TARGET is verified against SOURCE ({@code qemu-img compare}
 * when installed, else by reading both through jblockd's own nodes). Exit 0 only when identical.
 */
final class OneShotBackup {
    static final Path DEMO_DIR = Path.of("jblockd-demo");
    static final long DEMO_SIZE = 64L << 20;
    private static final int CHUNK = 1 << 20;

    private OneShotBackup() {
    }

    static int run(BackupCommand cmd) throws Exception {
        if (cmd.image != null && cmd.demo) {
            throw new CliException("--image and --demo exclude each other", 2);
        }
        if (cmd.detach) {
            throw new CliException("--detach makes no sense in one-shot mode (the daemon ends with the command)", 2);
        }
        Path source;
        Path target;
        if (cmd.demo) {
            if (cmd.positional.size() > 1) {
                throw new CliException("backup --demo takes at most TARGET", 2);
            }
            Files.createDirectories(DEMO_DIR);
            source = DEMO_DIR.resolve("source.img");
            target = cmd.positional.isEmpty() ? DEMO_DIR.resolve("backup.img") : Path.of(cmd.positional.get(0));
            SampleImage.create(source, DEMO_SIZE);
            cmd.top.out.println("demo: created " + source + " (" + Sizes.format(DEMO_SIZE)
                    + " raw, patterned data and holes)");
            if (cmd.mode != NewImageMode.EXISTING) {
                Files.deleteIfExists(target); // the demo's own previous result
            }
        } else {
            if (cmd.positional.size() != 1) {
                throw new CliException("backup --image SOURCE needs exactly one TARGET", 2);
            }
            source = Path.of(cmd.image);
            target = Path.of(cmd.positional.get(0));
            if (!Files.isRegularFile(source)) {
                throw new CliException("cannot open " + source + ": no such file", 2);
            }
            if (cmd.mode != NewImageMode.EXISTING && Files.exists(target)) {
                throw new CliException(target + " exists: remove it, or give --mode existing to write into it", 2);
            }
        }
        source = source.toAbsolutePath();
        target = target.toAbsolutePath();
        String format = DriverRegistry.standard().probe(source);

        Path tmp = Files.createTempDirectory("jblockctl-");
        int rc;
        try {
            rc = backup(cmd, source, format, target, tmp);
        } finally {
            deleteTree(tmp);
        }
        if (rc != 0) {
            return rc;
        }
        return verify(cmd, source, target);
    }

    private static int backup(BackupCommand cmd, Path source, String format, Path target, Path tmp) throws Exception {
        Path sock = tmp.resolve("qmp.sock");
        Daemon daemon = Daemon.builder().qmp("unix:" + sock)
                .drive("id=drive0,file=" + keyval(source.toString()) + ",format=" + format).build();
        try {
            daemon.start();
        } catch (Daemon.StartupException e) {
            throw new CliException("cannot start the embedded daemon: " + e.getMessage(), 2);
        }
        try (QmpClient qmp = QmpClient.connectUnix(sock)) {
            Job job = qmp.jobs().driveBackup(cmd.arguments("drive0", target.toString()));
            return JobWaiter.await(List.of(job), cmd.top.progressView(), JobWaiter.OnReady.WAIT, false);
        } finally {
            daemon.close();
        }
    }

    /** Compares TARGET with SOURCE; prints one line; 0 when identical, 1 otherwise. */
    static int verify(BackupCommand cmd, Path source, Path target) throws IOException, InterruptedException {
        String how;
        boolean same;
        if (onPath("qemu-img")) {
            how = "qemu-img compare";
            Process p = new ProcessBuilder("qemu-img", "compare", "-q", source.toString(), target.toString())
                    .redirectErrorStream(true).start();
            String out = new String(p.getInputStream().readAllBytes());
            if (!p.waitFor(10, TimeUnit.MINUTES)) {
                p.destroyForcibly();
                throw new CliException("qemu-img compare did not finish", 1);
            }
            if (p.exitValue() > 1) {
                throw new CliException("qemu-img compare failed: " + out.strip(), 1);
            }
            same = p.exitValue() == 0;
        } else {
            how = "reading both images through jblockd";
            same = sameContents(source, target);
        }
        if (cmd.top.json) {
            cmd.top.out.println("{\"kind\":\"verify\",\"identical\":" + same + ",\"source\":" + quote(source)
                    + ",\"target\":" + quote(target) + "}");
        } else {
            cmd.top.out.println(same ? "verified: " + target + " is identical to " + source + " (" + how + ")"
                    : "verify FAILED: " + target + " differs from " + source + " (" + how + ")");
        }
        return same ? 0 : 1;
    }

    /** Guest-visible contents of both images, read through jblockd's format drivers. */
    static boolean sameContents(Path a, Path b) throws IOException {
        NodeGraph graph = new NodeGraph(DriverRegistry.standard());
        try {
            BlockNode na = graph.add(graph.imageOptions(a, null, true, false, "verify-a"));
            BlockNode nb = graph.add(graph.imageOptions(b, null, true, false, "verify-b"));
            long len = na.length();
            if (nb.length() != len) {
                return false;
            }
            ByteBuffer ba = ByteBuffer.allocateDirect(CHUNK);
            ByteBuffer bb = ByteBuffer.allocateDirect(CHUNK);
            for (long off = 0; off < len; off += CHUNK) {
                int n = (int) Math.min(CHUNK, len - off);
                ba.clear().limit(n);
                bb.clear().limit(n);
                na.read(off, ba);
                nb.read(off, bb);
                if (!ba.flip().equals(bb.flip())) {
                    return false;
                }
            }
            return true;
        } finally {
            graph.closeAll();
        }
    }

    /** QEMU keyval: a comma in a value is written twice. */
    private static String keyval(String value) {
        return value.replace(",", ",,");
    }

    private static String quote(Path p) {
        return ShellSyntax.JSON.getNodeFactory().textNode(p.toString()).toString();
    }

    private static boolean onPath(String tool) {
        for (String dir : System.getenv().getOrDefault("PATH", "").split(java.io.File.pathSeparator)) {
            if (!dir.isEmpty() && Files.isExecutable(Path.of(dir, tool))) {
                return true;
            }
        }
        return false;
    }

    private static void deleteTree(Path dir) {
        try (Stream<Path> s = Files.walk(dir)) {
            for (Path p : s.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(p);
            }
        } catch (IOException e) {
            // a leftover temp directory is harmless
        }
    }
}
