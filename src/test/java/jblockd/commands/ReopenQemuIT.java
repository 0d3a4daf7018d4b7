package jblockd.commands;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QemuStorageDaemon;
import jblockd.testsupport.QmpTestClient;

/**
 * blockdev-reopen, change-backing-file and the read-only old top of a snapshot side by side with
 * qemu-storage-daemon 7.2: the same QMP sequence gives the same replies and error texts, the
 * same read-only states in query-named-block-nodes (generated node names written as #auto),
 * the same qemu-io results through NBD exports, and images that qemu-img shows the same and
 * checks clean (persistent bitmaps across ro -> rw -> ro; a rewritten backing file name).
 */
class ReopenQemuIT {

    @TempDir
    Path tmp;

    /** One peer: its QMP client, its directory, and what it answered (its directory as D). */
    private static final class Peer implements AutoCloseable {
        final QmpTestClient qmp;
        final Path dir;
        final AutoCloseable process;
        final List<String> lines = new ArrayList<>();

        Peer(QmpTestClient qmp, Path dir, AutoCloseable process) {
            this.qmp = qmp;
            this.dir = dir;
            this.process = process;
        }

        String norm(String s) {
            return s.replace(dir.toString(), "D").replaceAll("#block[0-9]+", "#auto");
        }

        JsonNode cmd(String name, String argsJson) throws IOException {
            JsonNode r = qmp.execute(name, QmpTestClient.json(argsJson.replace("D/", dir + "/")));
            lines.add(name + " " + norm((r.has("error") ? r.get("error") : r.get("return")).toString()));
            return r;
        }

        /** Each node as name:driver:ro, in the order query-named-block-nodes lists them. */
        void nodes() throws IOException {
            List<String> out = new ArrayList<>();
            for (JsonNode n : qmp.execute("query-named-block-nodes", QmpTestClient.json("{}")).get("return")) {
                StringBuilder b = new StringBuilder(n.get("node-name").asText() + ":" + n.get("drv").asText() + ":"
                        + n.get("ro").asBoolean());
                for (JsonNode bm : n.path("dirty-bitmaps")) {
                    b.append(" bm=").append(bm.get("name").asText()).append('/').append(bm.get("persistent"))
                            .append('/').append(bm.get("recording"));
                }
                out.add(norm(b.toString()));
            }
            lines.add("nodes " + out);
        }

        /** The generated name of the node whose driver is {@code drv} and file {@code file}. */
        String autoName(String drv, String file) throws IOException {
            for (JsonNode n : qmp.execute("query-named-block-nodes", QmpTestClient.json("{}")).get("return")) {
                if (n.get("drv").asText().equals(drv) && n.get("file").asText().equals(dir + "/" + file)) {
                    return n.get("node-name").asText();
                }
            }
            throw new AssertionError("no " + drv + " node over " + file);
        }

        void tool(String... cmd) throws IOException, InterruptedException {
            lines.add(run(dir, cmd));
        }

        /**
         * The image's persistent bitmaps by name with their flags, and whether qemu-img check finds
         * it clean: the layout (offsets, disk size) may differ, and so may the directory order of
         * bitmaps added since the open (jblockd's crash record writes them as they come).
         */
        void bitmapsOf(String image, boolean share) throws IOException, InterruptedException {
            List<String> info = new ArrayList<>(List.of("qemu-img", "info", "--output=json"));
            List<String> check = new ArrayList<>(List.of("qemu-img", "check"));
            if (share) {
                info.add("-U");
                check.add("-U");
            }
            info.add(dir + "/" + image);
            check.add(dir + "/" + image);
            Process p = new ProcessBuilder(info).redirectErrorStream(true).start();
            JsonNode j = QmpTestClient.json(new String(p.getInputStream().readAllBytes()));
            p.waitFor(60, TimeUnit.SECONDS);
            List<String> bitmaps = new ArrayList<>();
            for (JsonNode b : j.at("/format-specific/data/bitmaps")) {
                bitmaps.add(b.get("name").asText() + b.get("flags") + b.get("granularity"));
            }
            bitmaps.sort(null);
            String c = run(dir, check.toArray(String[]::new));
            lines.add(image + " bitmaps " + bitmaps + " clean " + c.contains("No errors were found"));
        }

        @Override
        public void close() throws Exception {
            qmp.close();
            process.close();
        }
    }

    private Peer jblockd(String name) throws IOException {
        Path d = Files.createDirectories(tmp.resolve(name));
        DaemonProcess p = DaemonProcess.start(d);
        return new Peer(p.connect(), d, p::close);
    }

    private Peer qsd(String name) throws Exception {
        Path d = Files.createDirectories(tmp.resolve(name));
        QemuStorageDaemon q = QemuStorageDaemon.start(d);
        return new Peer(q.connect(), d, q::close);
    }

    private static boolean have(String tool) {
        try {
            Process p = new ProcessBuilder(tool, "--version").redirectErrorStream(true).start();
            p.getInputStream().readAllBytes();
            return p.waitFor(10, TimeUnit.SECONDS) && p.exitValue() == 0;
        } catch (IOException | InterruptedException e) {
            return false;
        }
    }

    private static String run(Path dir, String... cmd) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        p.waitFor(60, TimeUnit.SECONDS);
        return String.join(" ", cmd).replace(dir.toString(), "D") + " -> "
                + out.replace(dir.toString(), "D").trim() + " exit " + p.exitValue();
    }

    /** Runs {@code sequence} on jblockd and on QEMU and compares the transcripts line by line. */
    private List<Path> sameOnBoth(String name, Function<Peer, List<String>> sequence) throws Exception {
        assumeTrue(have("qemu-storage-daemon") && have("qemu-img") && have("qemu-io"), "QEMU tools not installed");
        List<String> ours;
        List<String> theirs;
        Path jd;
        Path qd;
        try (Peer j = jblockd(name + "-j"); Peer q = qsd(name + "-q")) {
            ours = sequence.apply(j);
            theirs = sequence.apply(q);
            jd = j.dir;
            qd = q.dir;
        }
        assertThat(ours).containsExactlyElementsOf(theirs);
        return List.of(jd, qd);
    }

    private static final String FILE_A = "{\"driver\": \"file\", \"filename\": \"D/a.qcow2\"}";

    private static String reopen(String... options) {
        return "{\"options\": [" + String.join(", ", options) + "]}";
    }

    private static String qcow2(String extra, String file) {
        return "{\"driver\": \"qcow2\", \"node-name\": \"n0\"" + extra + ", \"file\": " + file + "}";
    }

    private static List<String> optionsSequence(Peer p) {
        try {
            p.tool("qemu-img", "create", "-q", "-f", "qcow2", p.dir + "/a.qcow2", "64M");
            p.tool("qemu-img", "create", "-q", "-f", "qcow2", p.dir + "/b.qcow2", "64M");
            p.cmd("blockdev-add", qcow2(", \"read-only\": true", FILE_A));
            p.nodes();
            p.cmd("blockdev-reopen", reopen(qcow2("", FILE_A)));
            p.nodes();
            p.cmd("blockdev-reopen", reopen("{\"driver\": \"raw\", \"node-name\": \"n0\", \"file\": " + FILE_A + "}"));
            p.cmd("blockdev-reopen", reopen("{\"driver\": \"qcow2\", \"node-name\": \"nx\", \"file\": " + FILE_A + "}"));
            p.cmd("blockdev-reopen", reopen("{\"driver\": \"qcow2\", \"file\": " + FILE_A + "}"));
            p.cmd("blockdev-reopen", reopen("{\"driver\": \"qcow2\", \"node-name\": \"n0\"}"));
            p.cmd("blockdev-reopen", reopen(qcow2("", "{\"driver\": \"file\", \"filename\": \"D/b.qcow2\"}")));
            p.cmd("blockdev-reopen", reopen(qcow2("", "{\"driver\": \"file\", \"filename\": \"D/a.qcow2\", "
                    + "\"cache\": {\"direct\": true}}")));
            p.cmd("blockdev-reopen", reopen(qcow2(", \"cache\": {\"no-flush\": true}", FILE_A)));
            p.cmd("blockdev-reopen", reopen(qcow2(", \"discard\": \"unmap\"", FILE_A)));
            p.cmd("blockdev-reopen", reopen(qcow2(", \"force-share\": true", FILE_A)));
            p.cmd("blockdev-reopen", reopen(qcow2("", "{\"driver\": \"file\", \"filename\": \"D/a.qcow2\", "
                    + "\"node-name\": \"other\"}")));
            p.cmd("blockdev-reopen", reopen(qcow2("", "{\"driver\": \"file\", \"filename\": \"D/a.qcow2\", "
                    + "\"read-only\": true}")));
            p.nodes();
            p.cmd("blockdev-reopen", reopen(qcow2(", \"read-only\": true", "\"zzz\"")));
            p.cmd("blockdev-reopen", reopen(qcow2(", \"read-only\": true", "\"" + p.autoName("file", "a.qcow2") + "\"")));
            p.nodes();
            p.cmd("blockdev-reopen", reopen(qcow2(", \"backing\": null", FILE_A)));
            p.cmd("blockdev-reopen", reopen(qcow2(", \"backing\": \"n0\"", FILE_A)));
            p.cmd("blockdev-reopen", reopen("{\"driver\": \"file\", \"node-name\": \"" + p.autoName("file", "a.qcow2")
                    + "\", \"filename\": \"D/a.qcow2\"}"));
            // all or nothing: the second entry fails, the first is not applied either
            p.cmd("blockdev-add", "{\"driver\": \"file\", \"node-name\": \"f1\", \"filename\": \"D/b.qcow2\"}");
            p.cmd("blockdev-reopen", reopen("{\"driver\": \"file\", \"node-name\": \"f1\", \"filename\": \"D/b.qcow2\", "
                    + "\"read-only\": true}", "{\"driver\": \"file\", \"node-name\": \"nope\", \"filename\": \"x\"}"));
            p.cmd("blockdev-reopen", reopen("{\"driver\": \"file\", \"node-name\": \"f1\", \"filename\": \"D/b.qcow2\", "
                    + "\"read-only\": true}", qcow2(", \"force-share\": true", FILE_A)));
            p.nodes();
            // a raw node over a file added on its own: the file is not reopened with it
            p.cmd("blockdev-add", "{\"driver\": \"raw\", \"node-name\": \"r1\", \"file\": \"f1\"}");
            p.cmd("blockdev-reopen", reopen("{\"driver\": \"raw\", \"node-name\": \"r1\", \"file\": \"f1\", "
                    + "\"read-only\": true}"));
            p.cmd("blockdev-reopen", reopen("{\"driver\": \"raw\", \"node-name\": \"r1\", \"file\": "
                    + "{\"driver\": \"file\", \"filename\": \"D/b.qcow2\"}}"));
            p.cmd("blockdev-reopen", reopen("{\"driver\": \"file\", \"node-name\": \"f1\", \"filename\": \"D/b.qcow2\", "
                    + "\"read-only\": true}"));
            p.nodes();
            // (r1 alone read-write over the read-only f1: QEMU 7.2 accepts it, jblockd refuses it as
            // blockdev-add of the same does: "Block node is read-only")
            p.cmd("blockdev-reopen", reopen("{\"driver\": \"raw\", \"node-name\": \"r1\", \"file\": \"f1\"}",
                    "{\"driver\": \"file\", \"node-name\": \"f1\", \"filename\": \"D/b.qcow2\"}"));
            p.nodes();
            p.cmd("blockdev-add", "{\"driver\": \"null-co\", \"node-name\": \"nul\"}");
            p.cmd("blockdev-reopen", reopen("{\"driver\": \"null-co\", \"node-name\": \"nul\", \"size\": 5}"));
            p.cmd("blockdev-reopen", reopen("{\"driver\": \"null-co\", \"node-name\": \"nul\", \"read-only\": true}"));
            p.nodes();
            return p.lines;
        } catch (IOException | InterruptedException e) {
            throw new AssertionError(e);
        }
    }

    @Test
    void reopenOptionsAndErrorsMatchQemu() throws Exception {
        sameOnBoth("opts", ReopenQemuIT::optionsSequence);
    }

    private static List<String> exportSequence(Peer p) {
        try {
            String nbd = "nbd+unix:///d?socket=" + p.dir.resolve("nbd.sock");
            p.tool("qemu-img", "create", "-q", "-f", "qcow2", p.dir + "/a.qcow2", "64M");
            p.cmd("nbd-server-start", "{\"addr\": {\"type\": \"unix\", \"data\": {\"path\": \"D/nbd.sock\"}}}");
            p.cmd("blockdev-add", qcow2("", FILE_A));
            p.cmd("block-export-add", "{\"type\": \"nbd\", \"id\": \"e0\", \"node-name\": \"n0\", \"name\": \"d\", "
                    + "\"writable\": true}");
            p.tool("qemu-io", "-f", "raw", "-c", "write -q -P 0x11 0 64k", nbd);
            // a writable export needs the node writable
            p.cmd("blockdev-reopen", reopen(qcow2(", \"read-only\": true", FILE_A)));
            p.nodes();
            p.cmd("block-export-del", "{\"id\": \"e0\"}");
            p.qmp.waitEvent("BLOCK_EXPORT_DELETED", e -> true, java.time.Duration.ofSeconds(20));
            p.cmd("block-export-add", "{\"type\": \"nbd\", \"id\": \"e1\", \"node-name\": \"n0\", \"name\": \"d\"}");
            p.cmd("blockdev-reopen", reopen(qcow2(", \"read-only\": true", FILE_A)));
            p.nodes();
            p.tool("qemu-io", "-f", "raw", "-c", "write -q -P 0x22 0 64k", nbd);
            p.tool("qemu-io", "-f", "raw", "-r", "-c", "read -q -P 0x11 0 64k", nbd);
            p.cmd("block-export-add", "{\"type\": \"nbd\", \"id\": \"e2\", \"node-name\": \"n0\", \"name\": \"w\", "
                    + "\"writable\": true}");
            p.cmd("blockdev-reopen", reopen(qcow2("", FILE_A)));
            p.nodes();
            p.cmd("block-export-add", "{\"type\": \"nbd\", \"id\": \"e2\", \"node-name\": \"n0\", \"name\": \"w\", "
                    + "\"writable\": true}");
            String w = "nbd+unix:///w?socket=" + p.dir.resolve("nbd.sock");
            p.tool("qemu-io", "-f", "raw", "-c", "write -q -P 0x33 0 64k", w);
            p.tool("qemu-io", "-f", "raw", "-r", "-c", "read -q -P 0x33 0 64k", nbd);
            p.cmd("block-export-del", "{\"id\": \"e2\"}");
            p.qmp.waitEvent("BLOCK_EXPORT_DELETED", e -> true, java.time.Duration.ofSeconds(20));
            p.cmd("block-export-del", "{\"id\": \"e1\"}");
            p.qmp.waitEvent("BLOCK_EXPORT_DELETED", e -> true, java.time.Duration.ofSeconds(20));
            // a snapshot reopens the old top (and its file) read-only; the export moves on top
            p.tool("qemu-img", "create", "-q", "-f", "qcow2", p.dir + "/o.qcow2", "64M");
            p.cmd("block-export-add", "{\"type\": \"nbd\", \"id\": \"e3\", \"node-name\": \"n0\", \"name\": \"d\", "
                    + "\"writable\": true}");
            p.cmd("blockdev-add", "{\"driver\": \"qcow2\", \"node-name\": \"ov\", \"backing\": null, \"file\": "
                    + "{\"driver\": \"file\", \"filename\": \"D/o.qcow2\"}}");
            p.cmd("blockdev-snapshot", "{\"node\": \"n0\", \"overlay\": \"ov\"}");
            p.nodes();
            p.cmd("blockdev-snapshot-sync", "{\"node-name\": \"ov\", \"snapshot-file\": \"D/o2.qcow2\", "
                    + "\"snapshot-node-name\": \"ov2\"}");
            p.nodes();
            p.tool("qemu-io", "-f", "raw", "-c", "write -q -P 0x44 64k 64k", nbd);
            // (the export stays: QEMU drops the overlay snapshot-sync opened with its last user)
            // change-backing-file: lookups, chain checks, a read-only image rewritten and read-only again
            p.cmd("change-backing-file", "{\"device\": \"ov2\", \"image-node-name\": \"ov\", "
                    + "\"backing-file\": \"D/renamed.qcow2\"}");
            p.cmd("change-backing-file", "{\"device\": \"ov2\", \"image-node-name\": \"n0\", \"backing-file\": \"x\"}");
            p.cmd("change-backing-file", "{\"device\": \"ov2\", \"image-node-name\": \"nope\", \"backing-file\": \"x\"}");
            p.cmd("change-backing-file", "{\"device\": \"nope\", \"image-node-name\": \"ov\", \"backing-file\": \"x\"}");
            p.cmd("change-backing-file", "{\"device\": \"ov\", \"image-node-name\": \"ov\", \"backing-file\": \"x\"}");
            p.cmd("blockdev-add", "{\"driver\": \"null-co\", \"node-name\": \"nul\"}");
            p.cmd("change-backing-file", "{\"device\": \"nul\", \"image-node-name\": \"ov\", \"backing-file\": \"x\"}");
            p.cmd("change-backing-file", "{\"device\": \"ov2\", \"image-node-name\": \"ov2\", "
                    + "\"backing-file\": \"o.qcow2\"}");
            p.cmd("change-backing-file", "{\"device\": \"ov2\", \"image-node-name\": \"ov2\", "
                    + "\"backing-file\": \"" + "x".repeat(1100) + "\"}");
            p.nodes();
            p.process.close(); // SIGTERM: a clean shutdown on both
            for (String img : List.of("a.qcow2", "o.qcow2", "o2.qcow2")) {
                p.tool("qemu-img", "info", p.dir + "/" + img);
                p.tool("qemu-img", "check", p.dir + "/" + img);
            }
            p.tool("qemu-io", "-f", "qcow2", "-r", "-c", "read -q -P 0x33 0 64k", p.dir + "/a.qcow2");
            p.tool("qemu-io", "-f", "raw", "-r", "-c", "read -q -P 0 0 64k", p.dir + "/o.qcow2");
            return p.lines;
        } catch (Exception e) {
            throw new AssertionError(e);
        }
    }

    @Test
    void exportsSnapshotsAndChangeBackingFileMatchQemu() throws Exception {
        sameOnBoth("exp", ReopenQemuIT::exportSequence);
    }

    private static List<String> bitmapSequence(Peer p) {
        try {
            p.tool("qemu-img", "create", "-q", "-f", "qcow2", p.dir + "/a.qcow2", "64M");
            p.tool("qemu-img", "bitmap", "--add", p.dir + "/a.qcow2", "bm0");
            p.tool("qemu-io", "-f", "qcow2", "-c", "write -q -P 0x55 0 1M", p.dir + "/a.qcow2");
            p.cmd("blockdev-add", "{\"driver\": \"file\", \"node-name\": \"f0\", \"filename\": \"D/a.qcow2\", "
                    + "\"read-only\": true}");
            p.cmd("blockdev-add", "{\"driver\": \"qcow2\", \"node-name\": \"n0\", \"file\": \"f0\", \"read-only\": true}");
            p.nodes();
            p.cmd("block-dirty-bitmap-clear", "{\"node\": \"n0\", \"name\": \"bm0\"}");
            p.cmd("blockdev-reopen", reopen("{\"driver\": \"qcow2\", \"node-name\": \"n0\", \"file\": \"f0\"}"));
            p.cmd("blockdev-reopen", reopen("{\"driver\": \"file\", \"node-name\": \"f0\", \"filename\": \"D/a.qcow2\"}",
                    "{\"driver\": \"qcow2\", \"node-name\": \"n0\", \"file\": \"f0\"}"));
            p.nodes();
            p.bitmapsOf("a.qcow2", true);
            p.cmd("block-dirty-bitmap-add", "{\"node\": \"n0\", \"name\": \"bm1\", \"persistent\": true}");
            p.cmd("block-dirty-bitmap-add", "{\"node\": \"n0\", \"name\": \"bm2\", \"persistent\": true, "
                    + "\"disabled\": true}");
            p.cmd("block-dirty-bitmap-clear", "{\"node\": \"n0\", \"name\": \"bm0\"}");
            p.cmd("x-debug-block-dirty-bitmap-sha256", "{\"node\": \"n0\", \"name\": \"bm0\"}");
            p.cmd("blockdev-reopen", reopen("{\"driver\": \"qcow2\", \"node-name\": \"n0\", \"file\": \"f0\", "
                    + "\"read-only\": true}", "{\"driver\": \"file\", \"node-name\": \"f0\", \"filename\": \"D/a.qcow2\", "
                    + "\"read-only\": true}"));
            p.nodes();
            p.bitmapsOf("a.qcow2", true);
            p.cmd("block-dirty-bitmap-clear", "{\"node\": \"n0\", \"name\": \"bm0\"}");
            p.cmd("block-dirty-bitmap-remove", "{\"node\": \"n0\", \"name\": \"bm1\"}");
            p.cmd("blockdev-reopen", reopen("{\"driver\": \"file\", \"node-name\": \"f0\", \"filename\": \"D/a.qcow2\"}",
                    "{\"driver\": \"qcow2\", \"node-name\": \"n0\", \"file\": \"f0\"}"));
            p.cmd("block-dirty-bitmap-remove", "{\"node\": \"n0\", \"name\": \"bm1\"}");
            p.nodes();
            p.process.close(); // SIGTERM: a clean shutdown on both
            p.bitmapsOf("a.qcow2", false);
            p.tool("qemu-io", "-f", "qcow2", "-r", "-c", "read -q -P 0x55 0 1M", p.dir + "/a.qcow2");
            return p.lines;
        } catch (Exception e) {
            throw new AssertionError(e);
        }
    }

    @Test
    void persistentBitmapsAcrossReopenMatchQemu() throws Exception {
        sameOnBoth("bm", ReopenQemuIT::bitmapSequence);
    }
}
