package jblockd.commands;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.nbd.MetaContextProbe;
import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.QemuStorageDaemon;
import jblockd.testsupport.QmpTestClient;

/**
 * Pull-mode reading of an export (reference/incremental.md §5): the NBD meta contexts
 * {@code qemu:dirty-bitmap:NAME} and {@code qemu:allocation-depth} on a qcow2 overlay with a
 * backing file, after guest writes through a writable export, and the QMP rules of
 * {@code block-export-add bitmaps/allocation-depth} and {@code nbd-server-add bitmap}. The same
 * steps run on jblockd and qemu-storage-daemon 7.2; every step's outcome goes into a transcript
 * (QMP replies, busy flags, {@code nbdinfo --list/--map}, {@code qemu-img map} with
 * {@code x-dirty-bitmap}, raw LIST/SET_META_CONTEXT and BLOCK_STATUS exchanges) and the two
 * transcripts must be equal. Without qemu-storage-daemon, jblockd's transcript is still held
 * against QEMU's figures from incremental.md.
 */
class NbdBitmapExportQemuIT {
    @TempDir
    Path dir;

    private record Peer(String name, QmpTestClient qmp, Path dir, AutoCloseable process) implements AutoCloseable {
        Path nbdSocket() {
            return dir.resolve("nbd.sock");
        }

        String uri(String export) {
            return "nbd+unix:///" + export + "?socket=" + nbdSocket();
        }

        @Override
        public void close() throws Exception {
            qmp.close();
            process.close();
        }
    }

    private Peer jblockd() throws IOException {
        Path d = Files.createDirectories(dir.resolve("jblockd"));
        DaemonProcess p = DaemonProcess.start(d, "--nbd-server", "addr.type=unix,addr.path=" + d.resolve("nbd.sock"));
        return new Peer("jblockd", p.connect(), d, p);
    }

    private Peer qsd() throws IOException, InterruptedException {
        Path d = dir.resolve("qsd");
        QemuStorageDaemon p = QemuStorageDaemon.start(d, "--nbd-server",
                "addr.type=unix,addr.path=" + d.resolve("nbd.sock"));
        return new Peer("qemu-storage-daemon", p.connect(), d, p);
    }

    @Test
    void bitmapAndDepthContextsMatchQemu() throws Exception {
        ExternalTools.assumeTools("qemu-img", "qemu-io", "nbdinfo");
        List<String> mine;
        try (Peer j = jblockd()) {
            mine = scenario(j);
        }
        assertThat(mine).as("jblockd transcript").contains(
                // incremental.md §5's figures for this layout
                "map qemu:allocation-depth: 0 65536 1 local | 65536 2031616 2 backing depth 2 | 2097152 2097152 0 absent"
                        + " | 4194304 1048576 1 local | 5242880 15728640 0 absent | 20971520 65536 1 local"
                        + " | 21037056 10420224 0 absent | 31457280 131072 1 local | 31588352 35520512 0 absent",
                "map qemu:dirty-bitmap:b1: 0 4194304 0 clean | 4194304 1048576 1 dirty | 5242880 15728640 0 clean"
                        + " | 20971520 65536 1 dirty | 21037056 10420224 0 clean | 31457280 131072 1 dirty"
                        + " | 31588352 35520512 0 clean",
                "block-export-add ro2 -> Enabled bitmap 'b1' incompatible with readonly export",
                "block-export-add ro3 -> Bitmap 'nob' is not found",
                "map filtered depth: 0 65536 1 local | 65536 2031616 3 backing depth 3 | 2097152 2097152 0 absent"
                        + " | 4194304 1048576 1 local | 5242880 15728640 0 absent | 20971520 65536 1 local"
                        + " | 21037056 10420224 0 absent | 31457280 131072 1 local | 31588352 35520512 0 absent");
        assumeTrue(ExternalTools.present("qemu-storage-daemon"), "qemu-storage-daemon not installed");
        List<String> theirs;
        try (Peer q = qsd()) {
            theirs = scenario(q);
        }
        assertThat(mine).as("jblockd's transcript vs qemu-storage-daemon 7.2's").containsExactlyElementsOf(theirs);
    }

    /** The steps; returns the transcript, with the peer's directory replaced by DIR. */
    private List<String> scenario(Peer p) throws Exception {
        List<String> t = new ArrayList<>();
        QmpTestClient c = p.qmp();
        Path base = p.dir().resolve("base.qcow2");
        Path top = p.dir().resolve("top.qcow2");
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", base.toString(), "64M");
        ExternalTools.ok("qemu-io", "-f", "qcow2", "-c", "write -P 0x22 0 2M", base.toString());
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base.toString(),
                top.toString(), "64M");
        ExternalTools.ok("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 64k", top.toString());

        c.executeOk("blockdev-add", Map.of("driver", "qcow2", "node-name", "fmt",
                "file", Map.of("driver", "file", "filename", top.toString())));
        c.executeOk("block-dirty-bitmap-add", Map.of("node", "fmt", "name", "b1"));
        c.executeOk("block-dirty-bitmap-add", Map.of("node", "fmt", "name", "b2", "granularity", 4096,
                "disabled", true));
        // a writable export may carry a recording bitmap; the guest writes through it
        step(t, c, "guest", "block-export-add", Map.of("type", "nbd", "id", "guest", "node-name", "fmt", "name", "vda",
                "writable", true, "bitmaps", List.of("b1")));
        ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 0x33 4M 1M", "-c", "write -P 0x44 20M 4k",
                "-c", "write 30M 100k", p.uri("vda"));
        t.add("bitmaps " + bitmaps(c));

        step(t, c, "ro1", "block-export-add", Map.of("type", "nbd", "id", "ro1", "node-name", "fmt", "name", "ro1",
                "bitmaps", List.of("b2")));
        step(t, c, "ro2", "block-export-add", Map.of("type", "nbd", "id", "ro2", "node-name", "fmt", "name", "ro2",
                "bitmaps", List.of("b1")));
        step(t, c, "ro3", "block-export-add", Map.of("type", "nbd", "id", "ro3", "node-name", "fmt", "name", "ro3",
                "bitmaps", List.of("nob")));
        step(t, c, "ro4", "block-export-add", Map.of("type", "nbd", "id", "ro4", "node-name", "fmt", "name", "ro4",
                "bitmaps", List.of(Map.of("node", "fmt", "name", "b1"))));
        step(t, c, "ro5", "block-export-add", Map.of("type", "nbd", "id", "ro5", "node-name", "fmt", "name", "ro5",
                "bitmaps", List.of(Map.of("node", "nonode", "name", "b1"))));
        step(t, c, "ro6", "block-export-add", Map.of("type", "nbd", "id", "ro6", "node-name", "fmt", "name", "ro6",
                "bitmaps", List.of(Map.of("node", "fmt", "name", "nob"))));
        step(t, c, "ro1", "block-export-del", Map.of("id", "ro1"));
        step(t, c, "b1", "block-dirty-bitmap-disable", Map.of("node", "fmt", "name", "b1"));
        step(t, c, "guest", "block-export-del", Map.of("id", "guest"));
        step(t, c, "b1", "block-dirty-bitmap-disable", Map.of("node", "fmt", "name", "b1"));
        step(t, c, "b2", "block-dirty-bitmap-merge", Map.of("node", "fmt", "target", "b2", "bitmaps", List.of("b1")));
        step(t, c, "bk", "block-export-add", Map.of("type", "nbd", "id", "bk", "node-name", "fmt", "name", "bk",
                "bitmaps", List.of("b1", "b2"), "allocation-depth", true));
        step(t, c, "b1", "block-dirty-bitmap-remove", Map.of("node", "fmt", "name", "b1"));
        step(t, c, "b2", "block-dirty-bitmap-enable", Map.of("node", "fmt", "name", "b2"));
        step(t, c, "b2again", "block-export-add", Map.of("type", "nbd", "id", "b2again", "node-name", "fmt",
                "name", "b2again", "bitmaps", List.of("b2")));
        t.add("bitmaps " + bitmaps(c));
        c.executeOk("block-dirty-bitmap-add", Map.of("node", "fmt", "name", "b3", "disabled", true));
        step(t, c, "legacy", "nbd-server-add", Map.of("device", "fmt", "name", "legacy", "bitmap", "b3"));
        step(t, c, "legacy2", "nbd-server-add", Map.of("device", "fmt", "name", "legacy2", "bitmap", "nob"));

        t.add("list " + tool(p, "nbdinfo", "--list", "--content", "nbd+unix://?socket=" + p.nbdSocket()));
        for (String ctx : List.of("base:allocation", "qemu:allocation-depth", "qemu:dirty-bitmap:b1",
                "qemu:dirty-bitmap:b2", "qemu:dirty-bitmap:b3")) {
            t.add("map " + ctx + ": " + tool(p, "nbdinfo", "--map=" + ctx, p.uri("bk")));
        }
        t.add("map legacy b3: " + tool(p, "nbdinfo", "--map=qemu:dirty-bitmap:b3", p.uri("legacy")));
        t.add("map legacy depth: " + tool(p, "nbdinfo", "--map=qemu:allocation-depth", p.uri("legacy")));
        for (String ctx : List.of("qemu:dirty-bitmap:b1", "qemu:allocation-depth")) {
            t.add("qemu-img map " + ctx + ": " + tool(p, "qemu-img", "map", "--output=json", "--image-opts",
                    "driver=nbd,server.type=unix,server.path=" + p.nbdSocket() + ",export=bk,x-dirty-bitmap=" + ctx));
        }
        rawExchanges(t, p);

        // QEMU counts a filter as a layer: through one, the backing's data is at depth 3
        c.executeOk("blockdev-add", Map.of("driver", "blkdebug", "node-name", "dbg", "image", "fmt"));
        step(t, c, "filtered", "block-export-add", Map.of("type", "nbd", "id", "filtered", "node-name", "dbg",
                "name", "filtered", "allocation-depth", true));
        t.add("map filtered depth: " + tool(p, "nbdinfo", "--map=qemu:allocation-depth", p.uri("filtered")));
        step(t, c, "filtered", "block-export-del", Map.of("id", "filtered"));

        // teardown: the bitmaps are free again once their exports are gone
        step(t, c, "bk", "block-export-del", Map.of("id", "bk"));
        step(t, c, "b1", "block-dirty-bitmap-remove", Map.of("node", "fmt", "name", "b1"));
        step(t, c, "legacy", "nbd-server-remove", Map.of("name", "legacy"));
        t.add("bitmaps " + bitmaps(c));
        return t.stream().map(s -> s.replace(p.dir().toString(), "DIR")).toList();
    }

    /** LIST and SET_META_CONTEXT as a raw client sends them, and the chunks of BLOCK_STATUS. */
    private static void rawExchanges(List<String> t, Peer p) throws IOException {
        try (MetaContextProbe m = new MetaContextProbe(p.nbdSocket())) {
            t.add("raw set before structured: " + m.metaContext(MetaContextProbe.OPT_SET_META_CONTEXT, "bk",
                    "base:allocation"));
            t.add("raw structured: " + m.structured());
            for (String[] q : List.of(new String[] {}, new String[] {"qemu:"}, new String[] {"qemu:dirty-bitmap:"},
                    new String[] {"base:"}, new String[] {"qemu:dirty-bitmap:b2", "base:allocation", "qemu:nosuch"},
                    new String[] {""})) {
                t.add("raw list " + String.join(",", q) + ": "
                        + m.metaContext(MetaContextProbe.OPT_LIST_META_CONTEXT, "bk", q));
            }
            t.add("raw list nosuch export: " + m.metaContext(MetaContextProbe.OPT_LIST_META_CONTEXT, "nosuch"));
            t.add("raw set wildcard: " + m.metaContext(MetaContextProbe.OPT_SET_META_CONTEXT, "bk", "qemu:"));
            // three contexts in one SET, in an order that is not the server's
            t.add("raw set three: " + m.metaContext(MetaContextProbe.OPT_SET_META_CONTEXT, "bk",
                    "qemu:dirty-bitmap:b1", "qemu:allocation-depth", "base:allocation"));
            t.add("raw go: " + m.go("bk"));
            t.add("raw status 0+8M: " + m.blockStatus(0, 8 << 20, 0));
            t.add("raw status REQ_ONE 4M+4k+1M: " + m.blockStatus((4 << 20) + 4096, 1 << 20,
                    MetaContextProbe.CMD_FLAG_REQ_ONE));
            t.add("raw status 20M+4k+100k (straddles granules): " + m.blockStatus((20 << 20) + 4096, 100 << 10, 0));
            t.add("raw status zero length: " + m.blockStatus(0, 0, 0));
        }
        try (MetaContextProbe m = new MetaContextProbe(p.nbdSocket())) {
            m.structured();
            t.add("raw set wildcard then go: " + m.metaContext(MetaContextProbe.OPT_SET_META_CONTEXT, "bk",
                    "qemu:dirty-bitmap:") + " " + m.go("bk"));
            t.add("raw status not negotiated: " + m.blockStatus(0, 4096, 0));
        }
        try (MetaContextProbe m = new MetaContextProbe(p.nbdSocket())) {
            m.structured();
            // a selection made on another export does not carry over to the one entered
            t.add("raw set on legacy, go bk: " + m.metaContext(MetaContextProbe.OPT_SET_META_CONTEXT, "legacy",
                    "base:allocation") + " " + m.go("bk"));
            t.add("raw status after switch: " + m.blockStatus(0, 4096, 0));
        }
    }

    private static void step(List<String> t, QmpTestClient c, String what, String cmd, Object args)
            throws IOException {
        JsonNode r = c.execute(cmd, args);
        t.add(cmd + " " + what + " -> " + (r.has("return") ? r.get("return").toString()
                : r.get("error").get("desc").asText()));
    }

    private static String bitmaps(QmpTestClient c) throws IOException {
        for (JsonNode n : c.executeOk("query-named-block-nodes", Map.of("flat", true))) {
            if (n.get("node-name").asText().equals("fmt")) {
                return String.valueOf(n.get("dirty-bitmaps"));
            }
        }
        return "no node";
    }

    /** A tool's output on one line (exit code first when it failed). */
    private static String tool(Peer p, String... cmd) throws IOException, InterruptedException {
        ExternalTools.Result r = ExternalTools.run(cmd);
        String out = String.join(" | ", r.out().strip().lines().map(String::strip).map(s -> s.replaceAll("\\s+", " "))
                .toList());
        return (r.exit() == 0 ? "" : "exit " + r.exit() + ": ") + out;
    }
}
