package jblockd.commands;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QemuStorageDaemon;
import jblockd.testsupport.QmpTestClient;

/**
 * blockdev-create, blockdev-snapshot and blockdev-snapshot-sync side by side with
 * qemu-storage-daemon 7.2: the same QMP sequence on both peers gives the same replies (error
 * texts too) and, per job, the same JOB_STATUS_CHANGE sequence and query-jobs entry; images
 * made by blockdev-create are byte-identical; snapshot chains pass qemu-img check and show the
 * same {@code qemu-img info --backing-chain} (paths normalised) and data. Where a reply and a
 * job's events race (QEMU sends either first), events are compared per job, not interleaved.
 */
class ImageLifecycleQemuIT {
    private static final Duration WAIT = Duration.ofSeconds(20);

    @TempDir
    Path tmp;

    private interface Peer extends AutoCloseable {
        QmpTestClient qmp();

        Path dir();

        @Override
        void close() throws Exception;
    }

    private Peer jblockd(String name) throws IOException {
        Path d = Files.createDirectories(tmp.resolve(name));
        DaemonProcess p = DaemonProcess.start(d);
        QmpTestClient c = p.connect();
        return new Peer() {
            public QmpTestClient qmp() {
                return c;
            }

            public Path dir() {
                return d;
            }

            public void close() {
                c.close();
                p.close();
            }
        };
    }

    private Peer qsd(String name) throws Exception {
        Path d = Files.createDirectories(tmp.resolve(name));
        QemuStorageDaemon q = QemuStorageDaemon.start(d);
        QmpTestClient c = q.connect();
        return new Peer() {
            public QmpTestClient qmp() {
                return c;
            }

            public Path dir() {
                return d;
            }

            public void close() throws InterruptedException {
                c.close();
                q.close();
            }
        };
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

    /** What one peer answered, with its own directory written as D. */
    private static final class Transcript {
        final List<String> lines = new ArrayList<>();
        final Peer peer;

        Transcript(Peer peer) {
            this.peer = peer;
        }

        String norm(JsonNode n) {
            return n.toString().replace(peer.dir().toString(), "D");
        }

        JsonNode cmd(String name, String argsJson) throws IOException {
            JsonNode args = QmpTestClient.json(argsJson.replace("D/", peer.dir() + "/"));
            JsonNode r = peer.qmp().execute(name, args);
            lines.add(name + " " + norm(r.has("error") ? r.get("error") : r.get("return")));
            return r;
        }

        /** blockdev-create, then (when accepted) its job's events, query-jobs and dismiss. */
        void create(String id, String optionsJson) throws IOException {
            JsonNode r = cmd("blockdev-create", "{\"job-id\": \"" + id + "\", \"options\": " + optionsJson + "}");
            if (r.has("error")) {
                return;
            }
            peer.qmp().waitEvent("JOB_STATUS_CHANGE", e -> e.at("/data/id").asText().equals(id)
                    && e.at("/data/status").asText().equals("concluded"), WAIT);
            List<String> statuses = new ArrayList<>();
            for (JsonNode e : peer.qmp().drainEvents()) {
                if (e.at("/data/id").asText().equals(id)) {
                    statuses.add(e.at("/data/status").asText());
                }
            }
            lines.add(id + " events " + statuses);
            cmd("query-jobs", "{}");
            cmd("job-dismiss", "{\"id\": \"" + id + "\"}");
            peer.qmp().drainEvents();
        }
    }

    private static final List<String[]> IMAGES = List.of(
            new String[]{"v3", "\"size\": 67108864"},
            new String[]{"v2", "\"size\": 1073741824, \"version\": \"v2\""},
            new String[]{"cs4k", "\"size\": 268435456, \"cluster-size\": 4096"},
            new String[]{"cs512rb1", "\"size\": 67108864, \"cluster-size\": 512, \"refcount-bits\": 1"},
            new String[]{"rb64lazy", "\"size\": 67108864, \"refcount-bits\": 64, \"lazy-refcounts\": true"},
            new String[]{"rb8cs2m", "\"size\": 3221225472, \"refcount-bits\": 8, \"cluster-size\": 2097152"},
            new String[]{"backing", "\"size\": 67108864, \"backing-file\": \"/some/base.qcow2\", \"backing-fmt\": \"qcow2\""},
            new String[]{"backingnofmt", "\"size\": 67108864, \"backing-file\": \"rel/base.raw\""},
            new String[]{"big", "\"size\": 2199023255552"});

    private static List<String> createSequence(Transcript t) throws IOException {
        t.create("c0", "{\"driver\": \"file\", \"filename\": \"D/a.qcow2\", \"size\": 0}");
        t.cmd("blockdev-add", "{\"driver\": \"file\", \"filename\": \"D/a.qcow2\", \"node-name\": \"f1\"}");
        t.cmd("blockdev-create", "{\"job-id\": \"r0\", \"options\": {\"driver\": \"raw\", \"file\": \"f1\"}}");
        t.cmd("blockdev-create", "{\"job-id\": \"r1\", \"options\": {\"driver\": \"raw\"}}");
        t.cmd("blockdev-create", "{\"job-id\": \"r2\", \"options\": {\"driver\": \"null-co\"}}");
        t.cmd("blockdev-create", "{\"job-id\": \"bad id\", \"options\": {\"driver\": \"file\", \"filename\": \"D/c\", \"size\": 0}}");
        t.cmd("blockdev-create", "{\"job-id\": \"r3\", \"options\": {\"driver\": \"qcow2\", \"file\": \"f1\", \"size\": 65536, \"preallocation\": \"bogus\"}}");
        String[] bad = {
            "{\"driver\": \"qcow2\", \"file\": \"f1\", \"size\": 1000}",
            "{\"driver\": \"qcow2\", \"file\": \"f1\", \"size\": 65536, \"cluster-size\": 1000}",
            "{\"driver\": \"qcow2\", \"file\": \"f1\", \"size\": 65536, \"version\": \"v2\", \"lazy-refcounts\": true}",
            "{\"driver\": \"qcow2\", \"file\": \"f1\", \"size\": 65536, \"refcount-bits\": 3}",
            "{\"driver\": \"qcow2\", \"file\": \"f1\", \"size\": 65536, \"version\": \"v2\", \"refcount-bits\": 8}",
            "{\"driver\": \"qcow2\", \"file\": \"f1\", \"size\": 65536, \"backing-fmt\": \"raw\"}",
            "{\"driver\": \"qcow2\", \"file\": \"nosuch\", \"size\": 65536}",
            "{\"driver\": \"file\", \"filename\": \"/nonexistent-dir/x\", \"size\": 65536}",
            "{\"driver\": \"file\", \"filename\": \"D/b\", \"size\": 65536, \"preallocation\": \"metadata\"}"};
        for (int i = 0; i < bad.length; i++) {
            t.create("e" + i, bad[i]);
        }
        t.create("c1", "{\"driver\": \"qcow2\", \"file\": \"f1\", \"size\": 67108864}");
        for (String[] img : IMAGES) {
            t.create("f" + img[0], "{\"driver\": \"file\", \"filename\": \"D/" + img[0] + ".qcow2\", \"size\": 0}");
            t.cmd("blockdev-add", "{\"driver\": \"file\", \"filename\": \"D/" + img[0] + ".qcow2\", \"node-name\": \"n"
                    + img[0] + "\"}");
            t.create("q" + img[0], "{\"driver\": \"qcow2\", \"file\": \"n" + img[0] + "\", " + img[1] + "}");
        }
        t.create("pfalloc", "{\"driver\": \"file\", \"filename\": \"D/falloc.raw\", \"size\": 1048576, \"preallocation\": \"falloc\"}");
        t.create("pfull", "{\"driver\": \"file\", \"filename\": \"D/full.raw\", \"size\": 1048576, \"preallocation\": \"full\", \"nocow\": true}");
        // a node in use: the create's own writer conflicts with the qcow2 node on the file
        t.cmd("blockdev-add", "{\"driver\": \"qcow2\", \"file\": \"f1\", \"node-name\": \"q1\"}");
        t.create("inuse", "{\"driver\": \"qcow2\", \"file\": \"f1\", \"size\": 65536}");
        t.cmd("query-block-jobs", "{}");
        return t.lines;
    }

    @Test
    void blockdevCreateRepliesEventsAndImagesMatchQemu() throws Exception {
        assumeTrue(have("qemu-storage-daemon"), "qemu-storage-daemon not installed");
        List<String> ours;
        List<String> theirs;
        Path jd;
        Path qd;
        try (Peer j = jblockd("j"); Peer q = qsd("q")) {
            ours = createSequence(new Transcript(j));
            theirs = createSequence(new Transcript(q));
            jd = j.dir();
            qd = q.dir();
        }
        assertThat(ours).containsExactlyElementsOf(theirs);
        List<String> files = new ArrayList<>(List.of("a.qcow2", "falloc.raw", "full.raw"));
        IMAGES.forEach(i -> files.add(i[0] + ".qcow2"));
        for (String f : files) {
            assertThat(Files.mismatch(jd.resolve(f), qd.resolve(f))).as(f + " byte-identical").isEqualTo(-1L);
        }
    }

    private static String run(Path dir, String... cmd) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        p.waitFor(60, TimeUnit.SECONDS);
        return out.replace(dir.toString(), "D") + " exit " + p.exitValue();
    }

    private static List<String> snapshotSequence(Transcript t) throws Exception {
        Path d = t.peer.dir();
        String nbd = "nbd+unix:///base?socket=" + d.resolve("nbd.sock");
        run(d, "qemu-img", "create", "-q", "-f", "qcow2", d + "/base.qcow2", "64M");
        t.cmd("nbd-server-start", "{\"addr\": {\"type\": \"unix\", \"data\": {\"path\": \"D/nbd.sock\"}}}");
        t.cmd("blockdev-add", "{\"driver\": \"qcow2\", \"node-name\": \"base\", \"file\": {\"driver\": \"file\", "
                + "\"filename\": \"D/base.qcow2\"}}");
        t.cmd("block-export-add", "{\"type\": \"nbd\", \"id\": \"exp\", \"node-name\": \"base\", \"writable\": true}");
        t.lines.add(run(d, "qemu-io", "-f", "raw", "-c", "write -q -P 0x11 0 1M", nbd));
        t.cmd("blockdev-snapshot-sync", "{\"node-name\": \"base\", \"snapshot-file\": \"D/ov1.qcow2\"}");
        t.cmd("blockdev-snapshot-sync", "{\"node-name\": \"nosuch\", \"snapshot-file\": \"D/x.qcow2\", \"snapshot-node-name\": \"x\"}");
        t.cmd("blockdev-snapshot-sync", "{\"device\": \"nosuch\", \"snapshot-file\": \"D/x.qcow2\"}");
        t.cmd("blockdev-snapshot-sync", "{\"node-name\": \"base\", \"snapshot-file\": \"D/x.qcow2\", \"snapshot-node-name\": \"base\"}");
        t.cmd("blockdev-snapshot-sync", "{\"node-name\": \"base\", \"snapshot-file\": \"D/nosuch.qcow2\", "
                + "\"snapshot-node-name\": \"y\", \"mode\": \"existing\"}");
        t.cmd("blockdev-snapshot-sync", "{\"node-name\": \"base\", \"snapshot-file\": \"D/x.qcow2\", "
                + "\"snapshot-node-name\": \"y\", \"format\": \"bogus\"}");
        t.cmd("blockdev-snapshot-sync", "{\"node-name\": \"base\", \"snapshot-file\": \"D/ov1.qcow2\", \"snapshot-node-name\": \"ov1\"}");
        t.lines.add(run(d, "qemu-io", "-f", "raw", "-c", "write -q -P 0x22 1M 1M", nbd));
        // blockdev-snapshot: an overlay made outside, added without its backing
        run(d, "qemu-img", "create", "-q", "-f", "qcow2", "-b", d + "/ov1.qcow2", "-F", "qcow2", d + "/ov2.qcow2", "64M");
        run(d, "qemu-img", "create", "-q", "-f", "qcow2", d + "/ovb.qcow2", "64M");
        t.cmd("blockdev-add", "{\"driver\": \"qcow2\", \"node-name\": \"ovb\", \"file\": {\"driver\": \"file\", "
                + "\"filename\": \"D/ovb.qcow2\"}, \"backing\": \"base\"}");
        t.cmd("blockdev-snapshot", "{\"node\": \"ov1\", \"overlay\": \"ovb\"}");
        t.cmd("blockdev-add", "{\"driver\": \"qcow2\", \"node-name\": \"ov2\", \"file\": {\"driver\": \"file\", "
                + "\"filename\": \"D/ov2.qcow2\"}, \"backing\": null}");
        t.cmd("blockdev-snapshot", "{\"node\": \"ov1\", \"overlay\": \"nosuch\"}");
        t.cmd("blockdev-snapshot", "{\"node\": \"nosuch\", \"overlay\": \"ov2\"}");
        t.cmd("blockdev-add", "{\"driver\": \"null-co\", \"node-name\": \"nul\"}");
        t.cmd("blockdev-snapshot", "{\"node\": \"ov1\", \"overlay\": \"nul\"}");
        t.cmd("blockdev-snapshot", "{\"node\": \"ov1\", \"overlay\": \"ov2\"}");
        t.lines.add(run(d, "qemu-io", "-f", "raw", "-c", "write -q -P 0x33 2M 1M", nbd));
        // a failing transaction leaves no overlay inserted (its created file stays, as in QEMU)
        t.cmd("transaction", "{\"actions\": [{\"type\": \"blockdev-snapshot-sync\", \"data\": {\"node-name\": \"ov2\", "
                + "\"snapshot-file\": \"D/ov3.qcow2\", \"snapshot-node-name\": \"ov3\"}}, {\"type\": \"abort\", \"data\": {}}]}");
        t.cmd("transaction", "{\"actions\": [{\"type\": \"blockdev-snapshot-sync\", \"data\": {\"node-name\": \"ov2\", "
                + "\"snapshot-file\": \"D/ov3.qcow2\", \"snapshot-node-name\": \"ov3\"}}], "
                + "\"properties\": {\"completion-mode\": \"grouped\"}}");
        t.lines.add("ov3 file exists " + Files.exists(d.resolve("ov3.qcow2")));
        t.cmd("transaction", "{\"actions\": [{\"type\": \"blockdev-snapshot-sync\", \"data\": {\"node-name\": \"ov2\", "
                + "\"snapshot-file\": \"D/ov4.qcow2\", \"snapshot-node-name\": \"ov4\"}}, {\"type\": \"blockdev-snapshot-sync\", "
                + "\"data\": {\"node-name\": \"ov4\", \"snapshot-file\": \"D/ov5.qcow2\", \"snapshot-node-name\": \"ov5\"}}]}");
        JsonNode exports = t.peer.qmp().execute("query-block-exports", null).get("return");
        t.lines.add("export on " + exports.get(0).get("node-name").asText());
        t.lines.add(run(d, "qemu-io", "-f", "raw", "-c", "write -q -P 0x44 3M 1M", nbd));
        return t.lines;
    }

    private static List<String> chain(Path d) throws Exception {
        List<String> out = new ArrayList<>();
        out.add(run(d, "qemu-img", "check", d + "/ov5.qcow2"));
        JsonNode info = QmpTestClient.json(run(d, "qemu-img", "info", "-U", "--backing-chain", "--output=json",
                d + "/ov5.qcow2").replaceAll(" exit 0$", ""));
        for (JsonNode i : info) {
            Map<String, String> m = new LinkedHashMap<>();
            for (String k : List.of("filename", "format", "virtual-size", "backing-filename", "backing-filename-format")) {
                m.put(k, i.path(k).asText());
            }
            out.add(m.toString());
        }
        String[] pats = {"0x11", "0x22", "0x33", "0x44"};
        for (int i = 0; i < pats.length; i++) {
            out.add(run(d, "qemu-io", "-f", "qcow2", "-r", "-c", "read -q -P " + pats[i] + " " + i + "M 1M",
                    d + "/ov5.qcow2"));
        }
        return out;
    }

    @Test
    void snapshotChainsMatchQemu() throws Exception {
        assumeTrue(have("qemu-storage-daemon") && have("qemu-img") && have("qemu-io"), "QEMU tools not installed");
        List<String> ours;
        List<String> theirs;
        Path jd;
        Path qd;
        try (Peer j = jblockd("sj"); Peer q = qsd("sq")) {
            ours = snapshotSequence(new Transcript(j));
            theirs = snapshotSequence(new Transcript(q));
            jd = j.dir();
            qd = q.dir();
        }
        assertThat(ours).containsExactlyElementsOf(theirs);
        List<String> ourChain = chain(jd);
        assertThat(ourChain).containsExactlyElementsOf(chain(qd));
        assertThat(ourChain.getFirst()).contains("No errors were found");
    }
}
