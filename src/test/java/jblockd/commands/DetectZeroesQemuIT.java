package jblockd.commands;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
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
 * detect-zeroes side by side with qemu-storage-daemon 7.2: the option's checks, what
 * query-named-block-nodes shows, and what a guest's zero-filled writes over NBD leave in the
 * image (allocation map and data) for off, on and unmap.
 */
class DetectZeroesQemuIT {
    @TempDir
    Path tmp;

    private static Map<String, Object> raw(Path d, String name, String detect, String discard) {
        return Map.of("driver", "raw", "node-name", name, "detect-zeroes", detect, "discard", discard,
                "file", Map.of("driver", "file", "filename", d.resolve(name + ".img").toString(),
                        "discard", discard, "node-name", name + "-file"));
    }

    private List<String> run(Path d, QmpTestClient c) throws Exception {
        List<String> out = new ArrayList<>();
        out.add(c.execute("blockdev-add", raw(d, "bad", "unmap", "ignore")).toString());
        out.add(c.execute("blockdev-add", Map.of("driver", "null-co", "node-name", "x", "detect-zeroes", "maybe"))
                .toString());
        for (String[] v : new String[][] {{"off", "unmap"}, {"on", "unmap"}, {"unmap", "unmap"}, {"unmap", "ignore"}}) {
            if (v[0].equals("unmap") && v[1].equals("ignore")) {
                continue;
            }
            String name = "n" + v[0];
            out.add(c.execute("blockdev-add", raw(d, name, v[0], v[1])).toString());
            out.add(c.execute("block-export-add", Map.of("type", "nbd", "id", name, "node-name", name,
                    "name", name, "writable", true)).toString());
            ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 0 0 256k", "-c", "write -P 0 512k 4k",
                    "nbd+unix:///" + name + "?socket=" + d.resolve("nbd.sock"));
            out.add(name + " map " + ExternalTools.ok("qemu-img", "map", "-U", "--output=json", "-f", "raw",
                    d.resolve(name + ".img").toString()).replaceAll("\\s+", ""));
        }
        for (JsonNode n : c.executeOk("query-named-block-nodes")) {
            out.add(n.get("node-name").asText() + " " + n.get("detect_zeroes").asText());
        }
        out.sort(null);
        return out;
    }

    @Test
    void detectZeroesLikeQemu() throws Exception {
        ExternalTools.assumeTools("qemu-storage-daemon", "qemu-img", "qemu-io");
        Path qd = Files.createDirectories(tmp.resolve("q"));
        Path jd = Files.createDirectories(tmp.resolve("j"));
        for (Path d : new Path[] {qd, jd}) {
            for (String n : new String[] {"noff", "non", "nunmap", "bad"}) {
                ExternalTools.ok("qemu-img", "create", "-f", "raw", "-o", "preallocation=full",
                        d.resolve(n + ".img").toString(), "1M");
            }
        }
        String[] nbd = {"--nbd-server", "addr.type=unix,addr.path="};
        try (QemuStorageDaemon q = QemuStorageDaemon.start(qd, nbd[0], nbd[1] + qd.resolve("nbd.sock"));
             DaemonProcess j = DaemonProcess.start(jd, nbd[0], nbd[1] + jd.resolve("nbd.sock"))) {
            QmpTestClient qc = q.connect();
            QmpTestClient jc = j.connect();
            List<String> qr = run(qd, qc);
            List<String> jr = run(jd, jc);
            assertThat(jr).isEqualTo(qr);
            // unmap with discard=unmap punched the zeroes out; off and on left them allocated
            assertThat(String.join("\n", jr)).contains("nunmap map [{\"start\":0,\"length\":262144,\"depth\":0,\"present\":true,\"zero\":true,\"data\":false");
            qc.close();
            jc.close();
        }
    }
}
