package jblockd.commands;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.QemuStorageDaemon;
import jblockd.testsupport.QmpTestClient;

/**
 * block_resize side by side with qemu-storage-daemon 7.2: the same nodes and the same calls give
 * the same replies (lookups, negative sizes, permission conflicts with an NBD export and with a
 * format node over its file, read-only nodes, drivers without resize, raw grow/shrink with and
 * without an offset), the same sizes afterwards, and an export added after the resize serves
 * the new size.
 */
class ResizeQemuIT {
    @TempDir
    Path tmp;

    private static String[] args(Path d) {
        return new String[] {
            "--blockdev", "driver=file,filename=" + d.resolve("d.qcow2") + ",node-name=f0",
            "--blockdev", "driver=qcow2,file=f0,node-name=q0",
            "--blockdev", "driver=file,filename=" + d.resolve("r.raw") + ",node-name=f1",
            "--blockdev", "driver=raw,file=f1,node-name=r1",
            "--blockdev", "driver=file,filename=" + d.resolve("o.raw") + ",node-name=f3",
            "--blockdev", "driver=raw,file=f3,node-name=r3,offset=512",
            "--blockdev", "driver=raw,file=f3,node-name=r4,offset=512,size=1024",
            "--blockdev", "driver=file,filename=" + d.resolve("r.raw") + ",node-name=f2,read-only=on",
            "--blockdev", "driver=null-co,node-name=n0,size=4096",
            "--nbd-server", "addr.type=unix,addr.path=" + d.resolve("nbd.sock"),
            "--export", "type=nbd,id=e0,node-name=q0,name=q,writable=on"};
    }

    private static Map<String, Object> m(Object... kv) {
        Map<String, Object> out = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) {
            out.put((String) kv[i], kv[i + 1]);
        }
        return out;
    }

    private static final List<Map<String, Object>> CALLS = List.of(
            m(), m("size", 1), m("device", "q0", "size", -1), m("node-name", "nope", "size", 4096),
            m("node-name", "q0", "size", -1), m("device", "", "size", 4096),
            m("node-name", "q0", "size", 2 << 20), m("device", "nope", "node-name", "q0", "size", 2 << 20),
            m("node-name", "f0", "size", 4 << 20), m("node-name", "f2", "size", 8192),
            m("node-name", "n0", "size", 8192), m("node-name", "r1", "size", Long.MAX_VALUE - 511),
            m("node-name", "r1", "size", 3000000), m("node-name", "r1", "size", 512),
            m("node-name", "f1", "size", 4096), m("node-name", "r1", "size", 0),
            m("node-name", "r1", "size", 2 << 20), m("node-name", "r3", "size", 8192),
            m("node-name", "r4", "size", 8192), m("node-name", "r1", "size", "x"));

    private List<JsonNode> run(QmpTestClient c) throws Exception {
        List<JsonNode> out = new ArrayList<>();
        for (Map<String, Object> a : CALLS) {
            out.add(c.execute("block_resize", a));
        }
        List<String> sizes = new ArrayList<>();
        for (JsonNode n : c.executeOk("query-named-block-nodes")) {
            if (!n.get("node-name").asText().startsWith("f")) {
                sizes.add(n.get("node-name").asText() + "=" + n.at("/image/virtual-size").asLong());
            }
        }
        sizes.sort(null);
        out.add(com.fasterxml.jackson.databind.node.TextNode.valueOf(String.join(",", sizes)));
        out.add(c.execute("block-export-add", m("type", "nbd", "id", "e1", "node-name", "r1", "name", "r")));
        return out;
    }

    @Test
    void resizeLikeQemu() throws Exception {
        ExternalTools.assumeTools("qemu-storage-daemon", "qemu-img", "nbdinfo");
        Path qd = Files.createDirectories(tmp.resolve("q"));
        Path jd = Files.createDirectories(tmp.resolve("j"));
        for (Path d : new Path[] {qd, jd}) {
            ExternalTools.ok("qemu-img", "create", "-f", "qcow2", d.resolve("d.qcow2").toString(), "1M");
            ExternalTools.ok("qemu-img", "create", "-f", "raw", d.resolve("r.raw").toString(), "1M");
            ExternalTools.ok("qemu-img", "create", "-f", "raw", d.resolve("o.raw").toString(), "1M");
        }
        try (QemuStorageDaemon q = QemuStorageDaemon.start(qd, args(qd));
             DaemonProcess j = DaemonProcess.start(jd, args(jd))) {
            QmpTestClient qc = q.connect();
            QmpTestClient jc = j.connect();
            List<JsonNode> qr = run(qc);
            List<JsonNode> jr = run(jc);
            for (int i = 0; i < qr.size(); i++) {
                assertThat(jr.get(i)).as("step %d %s", i, i < CALLS.size() ? CALLS.get(i) : "").isEqualTo(qr.get(i));
            }
            for (Path d : new Path[] {qd, jd}) {
                assertThat(ExternalTools.ok("nbdinfo", "--size", "nbd+unix:///r?socket=" + d.resolve("nbd.sock")).trim())
                        .isEqualTo(String.valueOf(2 << 20));
            }
            assertThat(Files.size(jd.resolve("r.raw"))).isEqualTo(Files.size(qd.resolve("r.raw")));
            assertThat(Files.size(jd.resolve("o.raw"))).isEqualTo(Files.size(qd.resolve("o.raw")));
            qc.close();
            jc.close();
        }
    }
}
