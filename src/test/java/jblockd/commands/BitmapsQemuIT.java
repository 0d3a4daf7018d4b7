package jblockd.commands;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.QmpTestClient;

/**
 * Dirty bitmaps, jblockd against QEMU 7.2: the same QMP sequence on both peers (qemu-storage-
 * daemon for nodes, qemu-system-x86_64 -M none where a drive is needed), guest writes done by
 * qemu-io over each peer's NBD export, and every reply compared: returns as they are, errors
 * by class and text, and the {@code dirty-bitmaps} member of every node (count, granularity,
 * recording, order), plus x-debug-block-dirty-bitmap-sha256 of the bits themselves. Covers
 * every command, every row of reference/bitmaps.md §2 that needs no persistent bitmap, the
 * default granularities of §3 and the count example of §4. A few answers are also written out
 * so the jblockd side is checked when QEMU is not installed.
 */
class BitmapsQemuIT {
    @TempDir
    Path dir;

    /** One peer: its QMP client, its NBD socket, its image directory. */
    private record Peer(String who, QmpTestClient qmp, Path nbd, Path images) {
    }

    /** The replies of a run, one line each, labelled by step. */
    private static final class Transcript {
        final List<String> lines = new ArrayList<>();
        final Peer p;

        Transcript(Peer p) {
            this.p = p;
        }

        /** Runs a command and records its reply: {@code return} as JSON, an error as class: desc. */
        JsonNode cmd(String label, String command, String args) throws IOException {
            JsonNode r = p.qmp().execute(command, args == null ? null : QmpTestClient.json(args));
            if (r.has("error")) {
                lines.add(label + " -> " + r.at("/error/class").asText() + ": " + r.at("/error/desc").asText());
            } else {
                lines.add(label + " -> " + r.get("return"));
            }
            return r;
        }

        /** A command that must succeed on both peers (setup); its reply is not compared. */
        void setup(String command, String args) throws IOException {
            p.qmp().executeOk(command, QmpTestClient.json(args.replace("IMAGES", p.images().toString())));
        }

        /** Records every node's dirty-bitmaps member (absent: "-"), by node name. */
        void bitmaps(String label) throws IOException {
            Map<String, String> byNode = new TreeMap<>();
            for (JsonNode n : p.qmp().executeOk("query-named-block-nodes", QmpTestClient.json("{\"flat\":true}"))) {
                String name = n.path("node-name").asText();
                if (!name.startsWith("#")) {
                    byNode.put(name, n.has("dirty-bitmaps") ? n.get("dirty-bitmaps").toString() : "-");
                }
            }
            byNode.forEach((node, v) -> lines.add(label + " " + node + " -> " + v));
        }

        /** Guest I/O: qemu-io over the peer's NBD export of {@code node}. */
        void io(String node, String... commands) throws IOException, InterruptedException {
            List<String> cmd = new ArrayList<>(List.of("qemu-io", "-f", "raw"));
            for (String c : commands) {
                cmd.add("-c");
                cmd.add(c);
            }
            cmd.add("nbd+unix:///" + node + "?socket=" + p.nbd());
            ExternalTools.ok(cmd.toArray(String[]::new));
        }

        void hash(String label, String node, String name) throws IOException {
            cmd(label, "x-debug-block-dirty-bitmap-sha256", "{\"node\":\"" + node + "\",\"name\":\"" + name + "\"}");
        }
    }

    private interface Script {
        void run(Transcript t) throws Exception;
    }

    // ---- the scripts ----

    /** Images of one peer: qcow2 with several cluster sizes, raw files. */
    private Path images(String who) throws Exception {
        Path d = Files.createDirectories(dir.resolve(who));
        for (String c : List.of("512", "4096", "32768", "65536", "2097152")) {
            ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=" + c,
                    d.resolve("c" + c + ".qcow2").toString(), "4M");
        }
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "raw", d.resolve("r.raw").toString(), "1M");
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "raw", d.resolve("ign.raw").toString(), "1M");
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "raw", d.resolve("unm.raw").toString(), "1M");
        return d;
    }

    private static void nodes(Transcript t) throws IOException {
        for (String c : List.of("512", "4096", "32768", "65536", "2097152")) {
            t.setup("blockdev-add", "{\"driver\":\"qcow2\",\"node-name\":\"q" + c + "\",\"file\":{\"driver\":\"file\","
                    + "\"filename\":\"IMAGES/c" + c + ".qcow2\"}}");
        }
        t.setup("blockdev-add", "{\"driver\":\"file\",\"node-name\":\"rawf\",\"filename\":\"IMAGES/r.raw\"}");
        t.setup("blockdev-add", "{\"driver\":\"raw\",\"node-name\":\"raw\",\"file\":\"rawf\"}");
        t.setup("blockdev-add", "{\"driver\":\"null-co\",\"node-name\":\"nul\",\"size\":1049088}");
        t.setup("blockdev-add", "{\"driver\":\"null-co\",\"node-name\":\"cnt\",\"size\":2097152}");
        t.setup("blockdev-add", "{\"driver\":\"null-co\",\"node-name\":\"nulunm\",\"size\":1048576,\"discard\":\"unmap\"}");
        t.setup("blockdev-add", "{\"driver\":\"raw\",\"node-name\":\"ign\",\"file\":{\"driver\":\"file\","
                + "\"filename\":\"IMAGES/ign.raw\"}}");
        t.setup("blockdev-add", "{\"driver\":\"raw\",\"node-name\":\"unm\",\"discard\":\"unmap\",\"file\":{\"driver\":"
                + "\"file\",\"discard\":\"unmap\",\"filename\":\"IMAGES/unm.raw\"}}");
        t.setup("nbd-server-start", "{\"addr\":{\"type\":\"unix\",\"data\":{\"path\":\"" + t.p.nbd() + "\"}}}");
        for (String n : List.of("raw", "nul", "cnt", "nulunm", "ign", "unm")) {
            t.setup("block-export-add", "{\"type\":\"nbd\",\"id\":\"e-" + n + "\",\"node-name\":\"" + n
                    + "\",\"writable\":true}");
        }
    }

    private static final Script COMMANDS_AND_ERRORS = t -> {
        nodes(t);
        // §3: default granularities (qcow2 cluster sizes clamped to [4K, 64K]; raw, file, null-co 64K)
        for (String n : List.of("q512", "q4096", "q32768", "q65536", "q2097152", "raw", "rawf", "nul")) {
            t.cmd("add default " + n, "block-dirty-bitmap-add", "{\"node\":\"" + n + "\",\"name\":\"def\"}");
        }
        t.bitmaps("defaults");
        // §2, add
        t.cmd("add exists", "block-dirty-bitmap-add", "{\"node\":\"nul\",\"name\":\"def\"}");
        t.cmd("add unknown node", "block-dirty-bitmap-add", "{\"node\":\"nosuch\",\"name\":\"x\"}");
        t.cmd("add empty name first", "block-dirty-bitmap-add", "{\"node\":\"nosuch\",\"name\":\"\"}");
        t.cmd("add 1024 bytes", "block-dirty-bitmap-add", "{\"node\":\"nul\",\"name\":\"" + "n".repeat(1024) + "\"}");
        t.cmd("add 1023 bytes", "block-dirty-bitmap-add", "{\"node\":\"nul\",\"name\":\"" + "n".repeat(1023) + "\"}");
        for (String g : List.of("0", "3", "256", "511", "65537", "4294967295", "-1", "4294967296", "\"4k\"")) {
            t.cmd("add granularity " + g, "block-dirty-bitmap-add",
                    "{\"node\":\"nul\",\"name\":\"g\",\"granularity\":" + g + "}");
        }
        t.cmd("add granularity 2^31", "block-dirty-bitmap-add",
                "{\"node\":\"nul\",\"name\":\"g31\",\"granularity\":2147483648}");
        t.cmd("add persistent raw", "block-dirty-bitmap-add", "{\"node\":\"raw\",\"name\":\"p\",\"persistent\":true}");
        t.cmd("add persistent file", "block-dirty-bitmap-add", "{\"node\":\"rawf\",\"name\":\"p\",\"persistent\":true}");
        t.cmd("add persistent null-co", "block-dirty-bitmap-add", "{\"node\":\"nul\",\"name\":\"p\",\"persistent\":true}");
        t.cmd("add autoload", "block-dirty-bitmap-add", "{\"node\":\"nul\",\"name\":\"a\",\"autoload\":true}");
        t.cmd("add no node", "block-dirty-bitmap-add", "{\"name\":\"a\"}");
        t.cmd("add no name", "block-dirty-bitmap-add", "{\"node\":\"nul\"}");
        t.cmd("add disabled", "block-dirty-bitmap-add",
                "{\"node\":\"nul\",\"name\":\"dis\",\"disabled\":true,\"granularity\":512,\"persistent\":false}");
        // the other commands: unknown node, missing bitmap, arguments
        for (String c : List.of("remove", "clear", "enable", "disable")) {
            t.cmd(c + " unknown node", "block-dirty-bitmap-" + c, "{\"node\":\"nosuch\",\"name\":\"x\"}");
            t.cmd(c + " missing", "block-dirty-bitmap-" + c, "{\"node\":\"nul\",\"name\":\"x\"}");
            t.cmd(c + " extra", "block-dirty-bitmap-" + c, "{\"node\":\"nul\",\"name\":\"def\",\"x\":1}");
        }
        t.cmd("sha256 unknown node", "x-debug-block-dirty-bitmap-sha256", "{\"node\":\"nosuch\",\"name\":\"x\"}");
        t.cmd("sha256 missing", "x-debug-block-dirty-bitmap-sha256", "{\"node\":\"nul\",\"name\":\"x\"}");
        t.cmd("merge unknown node", "block-dirty-bitmap-merge", "{\"node\":\"nosuch\",\"target\":\"def\",\"bitmaps\":[\"def\"]}");
        t.cmd("merge missing target", "block-dirty-bitmap-merge", "{\"node\":\"nul\",\"target\":\"nob\",\"bitmaps\":[\"nob2\"]}");
        t.cmd("merge missing source", "block-dirty-bitmap-merge", "{\"node\":\"nul\",\"target\":\"def\",\"bitmaps\":[\"nob2\"]}");
        t.cmd("merge unknown source node", "block-dirty-bitmap-merge",
                "{\"node\":\"nul\",\"target\":\"def\",\"bitmaps\":[{\"node\":\"zz\",\"name\":\"x\"}]}");
        t.cmd("merge missing external", "block-dirty-bitmap-merge",
                "{\"node\":\"nul\",\"target\":\"def\",\"bitmaps\":[\"dis\",{\"node\":\"raw\",\"name\":\"x\"}]}");
        t.cmd("merge sizes", "block-dirty-bitmap-merge",
                "{\"node\":\"nul\",\"target\":\"def\",\"bitmaps\":[{\"node\":\"raw\",\"name\":\"def\"}]}");
        t.cmd("merge item no name", "block-dirty-bitmap-merge",
                "{\"node\":\"nul\",\"target\":\"def\",\"bitmaps\":[{\"node\":\"nul\"}]}");
        t.cmd("merge item number", "block-dirty-bitmap-merge", "{\"node\":\"nul\",\"target\":\"def\",\"bitmaps\":[1]}");
        t.cmd("merge not a list", "block-dirty-bitmap-merge", "{\"node\":\"nul\",\"target\":\"def\",\"bitmaps\":\"def\"}");
        t.cmd("merge no bitmaps", "block-dirty-bitmap-merge", "{\"node\":\"nul\",\"target\":\"def\"}");
        t.cmd("merge into itself", "block-dirty-bitmap-merge", "{\"node\":\"nul\",\"target\":\"def\",\"bitmaps\":[\"def\"]}");
        t.bitmaps("after errors");
        // ordering: newest first; a removed one leaves a gap, a new one goes in front
        t.cmd("remove 1023", "block-dirty-bitmap-remove", "{\"node\":\"nul\",\"name\":\"" + "n".repeat(1023) + "\"}");
        t.cmd("remove g31", "block-dirty-bitmap-remove", "{\"node\":\"nul\",\"name\":\"g31\"}");
        t.cmd("add last", "block-dirty-bitmap-add", "{\"node\":\"nul\",\"name\":\"last\"}");
        t.bitmaps("order");
    };

    private static final Script SEMANTICS = t -> {
        nodes(t);
        // §4's count example: b0 at 64 KiB, b1 at 512, writes 0+1, 65536+4096, 1048576+65537
        t.cmd("add b0", "block-dirty-bitmap-add", "{\"node\":\"cnt\",\"name\":\"b0\"}");
        t.cmd("add b1", "block-dirty-bitmap-add", "{\"node\":\"cnt\",\"name\":\"b1\",\"granularity\":512}");
        t.io("cnt", "write 0 1", "write 65536 4096", "write 1048576 65537");
        t.bitmaps("count example");
        t.hash("hash b0", "cnt", "b0");
        t.hash("hash b1", "cnt", "b1");
        // the last, partial granule counts whole
        t.cmd("add tail", "block-dirty-bitmap-add", "{\"node\":\"nul\",\"name\":\"tail\"}");
        t.io("nul", "write 1048576 512");
        // disabled bitmaps keep their bits and ignore writes; enable, clear, merge
        t.cmd("disable b0", "block-dirty-bitmap-disable", "{\"node\":\"cnt\",\"name\":\"b0\"}");
        t.cmd("disable b0 again", "block-dirty-bitmap-disable", "{\"node\":\"cnt\",\"name\":\"b0\"}");
        t.io("cnt", "write 1900000 10");
        t.bitmaps("disabled");
        t.cmd("enable b0", "block-dirty-bitmap-enable", "{\"node\":\"cnt\",\"name\":\"b0\"}");
        t.cmd("enable b0 again", "block-dirty-bitmap-enable", "{\"node\":\"cnt\",\"name\":\"b0\"}");
        t.io("cnt", "write 1500000 10");
        t.cmd("add tmp disabled", "block-dirty-bitmap-add",
                "{\"node\":\"cnt\",\"name\":\"tmp\",\"disabled\":true,\"granularity\":65536}");
        t.cmd("merge finer into disabled", "block-dirty-bitmap-merge", "{\"node\":\"cnt\",\"target\":\"tmp\",\"bitmaps\":[\"b1\"]}");
        t.hash("hash tmp", "cnt", "tmp");
        t.cmd("clear b1", "block-dirty-bitmap-clear", "{\"node\":\"cnt\",\"name\":\"b1\"}");
        t.hash("hash b1 cleared", "cnt", "b1");
        // across nodes of the same size (a node-name and an external reference)
        t.cmd("add on raw", "block-dirty-bitmap-add", "{\"node\":\"raw\",\"name\":\"x\",\"granularity\":4096}");
        t.cmd("add on unm", "block-dirty-bitmap-add", "{\"node\":\"unm\",\"name\":\"y\",\"granularity\":4096}");
        t.io("unm", "write 8192 100");
        t.cmd("merge across nodes", "block-dirty-bitmap-merge",
                "{\"node\":\"raw\",\"target\":\"x\",\"bitmaps\":[{\"node\":\"unm\",\"name\":\"y\"}]}");
        t.hash("hash x", "raw", "x");
        // discard=ignore records nothing; write-zeroes always; discard=unmap records; null-co
        // has no discard at all
        t.cmd("add on ign", "block-dirty-bitmap-add", "{\"node\":\"ign\",\"name\":\"b\"}");
        t.cmd("add on nulunm", "block-dirty-bitmap-add", "{\"node\":\"nulunm\",\"name\":\"b\"}");
        for (String n : List.of("ign", "unm", "nulunm")) {
            t.io(n, "discard 0 64k", "write -z 131072 4096", "write -z -u 262144 4096");
        }
        // writes through the raw node reach its file node's bitmap too
        t.cmd("add on rawf", "block-dirty-bitmap-add", "{\"node\":\"rawf\",\"name\":\"f\"}");
        t.io("raw", "write 196608 1");
        t.bitmaps("semantics");
        t.cmd("remove x", "block-dirty-bitmap-remove", "{\"node\":\"raw\",\"name\":\"x\"}");
        t.bitmaps("removed");
    };

    /** A device (drive0, raw) and a qcow2 drive: lookups by device name and query-block. */
    private static final Script DEVICES = t -> {
        t.cmd("add by device", "block-dirty-bitmap-add", "{\"node\":\"drive0\",\"name\":\"b\"}");
        t.cmd("add by node of device", "block-dirty-bitmap-add", "{\"node\":\"rawn\",\"name\":\"b\"}");
        t.cmd("persistent shows device name", "block-dirty-bitmap-add",
                "{\"node\":\"rawn\",\"name\":\"p\",\"persistent\":true}");
        t.cmd("default granularity qcow2 32K drive", "block-dirty-bitmap-add", "{\"node\":\"drive1\",\"name\":\"q\"}");
        t.cmd("disable by device", "block-dirty-bitmap-disable", "{\"node\":\"drive0\",\"name\":\"b\"}");
        t.cmd("merge by device", "block-dirty-bitmap-merge",
                "{\"node\":\"drive0\",\"target\":\"b\",\"bitmaps\":[{\"node\":\"drive0\",\"name\":\"b\"}]}");
        t.cmd("hash by device", "x-debug-block-dirty-bitmap-sha256", "{\"node\":\"drive0\",\"name\":\"b\"}");
        JsonNode blocks = t.p.qmp().executeOk("query-block");
        for (JsonNode b : blocks) {
            JsonNode ins = b.get("inserted");
            t.lines.add("query-block " + b.get("device").asText() + " -> "
                    + (ins.has("dirty-bitmaps") ? ins.get("dirty-bitmaps").toString() : "-")
                    + " members " + (ins.has("dirty-bitmaps") ? QmpTestClient.memberNames(ins.get("dirty-bitmaps").get(0)) : ""));
        }
        t.cmd("remove by device", "block-dirty-bitmap-remove", "{\"node\":\"drive0\",\"name\":\"b\"}");
        t.cmd("remove again by node", "block-dirty-bitmap-remove", "{\"node\":\"rawn\",\"name\":\"b\"}");
    };

    /** Images for the persistent rows: a v2 qcow2, two bitmaps to open read-only, an in_use bitmap. */
    private Path persistentImages(String who) throws Exception {
        Path d = Files.createDirectories(dir.resolve("p-" + who));
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", d.resolve("v2.qcow2").toString(), "1M");
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", d.resolve("v3.qcow2").toString(), "1M");
        Path ro = d.resolve("ro.qcow2");
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", ro.toString(), "1M");
        ExternalTools.ok("qemu-img", "bitmap", "--add", ro.toString(), "pb");
        ExternalTools.ok("qemu-img", "bitmap", "--add", "--disable", ro.toString(), "pd");
        ExternalTools.ok("qemu-io", "-c", "write 0 64k", ro.toString()); // recorded into pb (auto)
        Path inc = d.resolve("inc.qcow2");
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", inc.toString(), "1M");
        ExternalTools.ok("qemu-img", "bitmap", "--add", inc.toString(), "bm0");
        ExternalTools.run("qemu-io", "-c", "write 0 64k", "-c", "sigraise 9", inc.toString()); // left in_use
        return d;
    }

    private static final Script PERSISTENT = t -> {
        t.setup("blockdev-add", "{\"driver\":\"qcow2\",\"node-name\":\"v2\",\"file\":{\"driver\":\"file\","
                + "\"filename\":\"IMAGES/v2.qcow2\"}}");
        t.setup("blockdev-add", "{\"driver\":\"qcow2\",\"node-name\":\"v3\",\"file\":{\"driver\":\"file\","
                + "\"filename\":\"IMAGES/v3.qcow2\"}}");
        t.setup("blockdev-add", "{\"driver\":\"qcow2\",\"node-name\":\"ro\",\"read-only\":true,\"file\":"
                + "{\"driver\":\"file\",\"read-only\":true,\"filename\":\"IMAGES/ro.qcow2\"}}");
        t.setup("blockdev-add", "{\"driver\":\"qcow2\",\"node-name\":\"inc\",\"file\":{\"driver\":\"file\","
                + "\"filename\":\"IMAGES/inc.qcow2\"}}");
        t.bitmaps("loaded");
        t.cmd("persistent on v2", "block-dirty-bitmap-add", "{\"node\":\"v2\",\"name\":\"p1\",\"persistent\":true}");
        t.cmd("persistent on v3", "block-dirty-bitmap-add",
                "{\"node\":\"v3\",\"name\":\"p\",\"persistent\":true,\"granularity\":4096}");
        t.cmd("persistent too long", "block-dirty-bitmap-add",
                "{\"node\":\"v3\",\"name\":\"" + "n".repeat(1024) + "\",\"persistent\":true}");
        t.cmd("persistent exists", "block-dirty-bitmap-add", "{\"node\":\"ro\",\"name\":\"pb\",\"persistent\":true}");
        // read-only bitmaps: enable/disable only
        t.cmd("clear readonly", "block-dirty-bitmap-clear", "{\"node\":\"ro\",\"name\":\"pb\"}");
        t.cmd("remove readonly", "block-dirty-bitmap-remove", "{\"node\":\"ro\",\"name\":\"pb\"}");
        t.cmd("merge into readonly, missing source", "block-dirty-bitmap-merge",
                "{\"node\":\"ro\",\"target\":\"pb\",\"bitmaps\":[\"nosuch\"]}");
        t.cmd("merge into readonly", "block-dirty-bitmap-merge", "{\"node\":\"ro\",\"target\":\"pb\",\"bitmaps\":[\"pd\"]}");
        t.cmd("merge into readonly from inconsistent", "block-dirty-bitmap-merge",
                "{\"node\":\"ro\",\"target\":\"pb\",\"bitmaps\":[{\"node\":\"inc\",\"name\":\"bm0\"}]}");
        t.cmd("disable readonly", "block-dirty-bitmap-disable", "{\"node\":\"ro\",\"name\":\"pb\"}");
        t.cmd("enable readonly", "block-dirty-bitmap-enable", "{\"node\":\"ro\",\"name\":\"pd\"}");
        t.hash("hash readonly", "ro", "pb");
        // inconsistent: only remove (and the debug hash)
        t.cmd("add t", "block-dirty-bitmap-add", "{\"node\":\"inc\",\"name\":\"t\"}");
        t.cmd("merge from readonly", "block-dirty-bitmap-merge",
                "{\"node\":\"inc\",\"target\":\"t\",\"bitmaps\":[{\"node\":\"ro\",\"name\":\"pb\"}]}");
        t.cmd("merge from inconsistent", "block-dirty-bitmap-merge", "{\"node\":\"inc\",\"target\":\"t\",\"bitmaps\":[\"bm0\"]}");
        t.cmd("merge into inconsistent", "block-dirty-bitmap-merge", "{\"node\":\"inc\",\"target\":\"bm0\",\"bitmaps\":[\"t\"]}");
        for (String c : List.of("clear", "enable", "disable")) {
            t.cmd(c + " inconsistent", "block-dirty-bitmap-" + c, "{\"node\":\"inc\",\"name\":\"bm0\"}");
        }
        t.hash("hash inconsistent", "inc", "bm0");
        t.bitmaps("before remove");
        t.cmd("remove inconsistent", "block-dirty-bitmap-remove", "{\"node\":\"inc\",\"name\":\"bm0\"}");
        t.bitmaps("after remove");
        // a clean close stores the persistent bitmap of v3
        t.setup("blockdev-del", "{\"node-name\":\"v3\"}");
        t.setup("blockdev-del", "{\"node-name\":\"inc\"}");
        for (String img : List.of("v3", "inc")) {
            JsonNode info = QmpTestClient.json(ExternalTools.ok("qemu-img", "info", "-U", "--output=json",
                    t.p.images().resolve(img + ".qcow2").toString()));
            t.lines.add("stored " + img + " -> " + info.at("/format-specific/data/bitmaps"));
        }
    };

    // ---- the tests ----

    @Test
    void commandsAndErrorsMatchQemu() throws Exception {
        List<String> j = onJblockd(COMMANDS_AND_ERRORS);
        assertThat(j).contains(
                "add default q512 -> {}",
                "add empty name first -> GenericError: Bitmap name cannot be empty",
                "add unknown node -> GenericError: Cannot find device='nosuch' nor node-name='nosuch'",
                "add granularity -1 -> GenericError: Parameter 'granularity' expects uint32_t",
                "add persistent file -> GenericError: Can't store persistent bitmaps to rawf: Operation not supported",
                "remove unknown node -> GenericError: Node 'nosuch' not found",
                "merge sizes -> GenericError: Bitmaps are of different sizes (destination size is 1049088, source"
                        + " size is 1048576) and can't be merged");
        assertThat(j).anyMatch(l -> l.startsWith("defaults q512 -> [{\"name\":\"def\",\"recording\":true,"
                + "\"persistent\":false,\"busy\":false,\"granularity\":4096,"));
        assertSameOnQemu(COMMANDS_AND_ERRORS, j);
    }

    @Test
    void countsHashesAndRecordingMatchQemu() throws Exception {
        List<String> j = onJblockd(SEMANTICS);
        assertThat(j).contains("count example cnt -> [{\"name\":\"b1\",\"recording\":true,\"persistent\":false,"
                + "\"busy\":false,\"granularity\":512,\"count\":70656},{\"name\":\"b0\",\"recording\":true,"
                + "\"persistent\":false,\"busy\":false,\"granularity\":65536,\"count\":262144}]");
        assertThat(j).anyMatch(l -> l.startsWith("semantics nul -> [{\"name\":\"tail\"") && l.contains("\"count\":65536"));
        assertSameOnQemu(SEMANTICS, j);
    }

    @Test
    void deviceNamesAndQueryBlockMatchQemu() throws Exception {
        assumeTrue(ExternalTools.present("qemu-img"), "qemu-img not installed");
        Path jd = Files.createDirectories(dir.resolve("jdev"));
        List<String> j;
        try (DaemonProcess d = DaemonProcess.start(jd, deviceArgs(jd, "--drive", ""));
             QmpTestClient c = d.connect()) {
            Transcript t = new Transcript(new Peer("jblockd", c, jd.resolve("nbd.sock"), jd));
            DEVICES.run(t);
            j = t.lines;
        }
        assertThat(j).contains("persistent shows device name -> GenericError: Can't store persistent bitmaps to"
                + " drive0: Operation not supported", "add by node of device -> GenericError: Bitmap already exists: b");
        if (!ExternalTools.present("qemu-system-x86_64")) {
            return;
        }
        Path qd = Files.createDirectories(dir.resolve("qdev"));
        Path sock = qd.resolve("qmp.sock");
        List<String> cmd = new ArrayList<>(List.of("qemu-system-x86_64", "-M", "none", "-nodefaults", "-display",
                "none", "-qmp", "unix:" + sock + ",server=on,wait=off"));
        cmd.addAll(List.of(deviceArgs(qd, "-drive", "if=none,")));
        Process qemu = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(qd.resolve("qemu.log").toFile())
                .start();
        try {
            waitFor(sock, qemu);
            try (QmpTestClient q = QmpTestClient.connectUnix(sock)) {
                Transcript t = new Transcript(new Peer("qemu", q, qd.resolve("nbd.sock"), qd));
                DEVICES.run(t);
                assertLinesEqual(t.lines, j);
            }
        } finally {
            qemu.destroy();
            qemu.waitFor(10, TimeUnit.SECONDS);
        }
    }

    /**
     * The rows that need persistent bitmaps (read-only, inconsistent, qcow2 v2, stored at close):
     * QEMU's answers are checked as written out here; jblockd's against them once its qcow2
     * driver keeps bitmaps (the qcow2 side is built separately; until then this part skips).
     */
    @Test
    void persistentBitmapRowsMatchQemu() throws Exception {
        assumeTrue(ExternalTools.present("qemu-img") && ExternalTools.present("qemu-io"), "qemu-img/qemu-io missing");
        List<String> q = null;
        if (ExternalTools.present("qemu-storage-daemon")) {
            Path images = persistentImages("q");
            Path qd = Files.createDirectories(dir.resolve("pqsd"));
            Path sock = qd.resolve("qmp.sock");
            Process qsd = new ProcessBuilder("qemu-storage-daemon", "--chardev",
                    "socket,id=m,path=" + sock + ",server=on,wait=off", "--monitor", "chardev=m,mode=control")
                    .redirectErrorStream(true).redirectOutput(qd.resolve("qsd.log").toFile()).start();
            try {
                waitFor(sock, qsd);
                try (QmpTestClient c = QmpTestClient.connectUnix(sock)) {
                    Transcript t = new Transcript(new Peer("qemu", c, qd.resolve("nbd.sock"), images));
                    PERSISTENT.run(t);
                    q = t.lines;
                }
            } finally {
                qsd.destroy();
                qsd.waitFor(10, TimeUnit.SECONDS);
            }
            assertThat(q).contains(
                    "loaded ro -> [{\"name\":\"pd\",\"recording\":false,\"persistent\":true,\"busy\":false,"
                            + "\"granularity\":65536,\"count\":0},{\"name\":\"pb\",\"recording\":true,"
                            + "\"persistent\":true,\"busy\":false,\"granularity\":65536,\"count\":65536}]",
                    "loaded inc -> [{\"name\":\"bm0\",\"recording\":false,\"persistent\":true,\"busy\":false,"
                            + "\"granularity\":65536,\"count\":0,\"inconsistent\":true}]",
                    "persistent on v2 -> GenericError: Can't make bitmap 'p1' persistent in 'v2': Cannot store dirty"
                            + " bitmaps in qcow2 v2 files",
                    "clear readonly -> GenericError: Bitmap 'pb' is readonly and cannot be modified",
                    "merge into readonly, missing source -> GenericError: Dirty bitmap 'nosuch' not found",
                    "merge into readonly from inconsistent -> GenericError: Bitmap 'pb' is readonly and cannot be modified",
                    "merge from readonly -> {}",
                    "enable inconsistent -> GenericError: Bitmap 'bm0' is inconsistent and cannot be used",
                    "remove inconsistent -> {}",
                    "stored v3 -> [{\"flags\":[\"auto\"],\"name\":\"p\",\"granularity\":4096}]",
                    "stored inc -> ");
        }
        Path images = persistentImages("j");
        Path jd = Files.createDirectories(dir.resolve("pj"));
        try (DaemonProcess d = DaemonProcess.start(jd); QmpTestClient c = d.connect()) {
            c.executeOk("blockdev-add", QmpTestClient.json("{\"driver\":\"qcow2\",\"node-name\":\"probe\","
                    + "\"file\":{\"driver\":\"file\",\"filename\":\"" + images.resolve("v3.qcow2") + "\"}}"));
            JsonNode probe = c.execute("block-dirty-bitmap-add", Map.of("node", "probe", "name", "x", "persistent", true));
            assumeTrue(probe.has("return"), "jblockd's qcow2 driver keeps no persistent bitmaps in this build: "
                    + probe.at("/error/desc").asText());
            c.executeOk("block-dirty-bitmap-remove", Map.of("node", "probe", "name", "x"));
            c.executeOk("blockdev-del", Map.of("node-name", "probe"));
            Transcript t = new Transcript(new Peer("jblockd", c, jd.resolve("nbd.sock"), images));
            PERSISTENT.run(t);
            if (q != null) {
                assertLinesEqual(q, t.lines);
            }
        }
    }

    private static String[] deviceArgs(Path d, String opt, String prefix) throws Exception {
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "raw", d.resolve("d0.raw").toString(), "1M");
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=32768",
                d.resolve("d1.qcow2").toString(), "1M");
        return new String[] {opt, prefix + "id=drive0,file=" + d.resolve("d0.raw") + ",format=raw,node-name=rawn",
            opt, prefix + "id=drive1,file=" + d.resolve("d1.qcow2") + ",format=qcow2"};
    }

    // ---- running a script on each peer ----

    private List<String> onJblockd(Script s) throws Exception {
        assumeTrue(ExternalTools.present("qemu-img") && ExternalTools.present("qemu-io"), "qemu-img/qemu-io missing");
        Path images = images("j");
        Path jd = Files.createDirectories(dir.resolve("jd"));
        try (DaemonProcess d = DaemonProcess.start(jd); QmpTestClient c = d.connect()) {
            Transcript t = new Transcript(new Peer("jblockd", c, jd.resolve("nbd.sock"), images));
            s.run(t);
            return t.lines;
        }
    }

    /** Runs the script on qemu-storage-daemon (when installed) and compares line by line. */
    private void assertSameOnQemu(Script s, List<String> jblockd) throws Exception {
        if (!ExternalTools.present("qemu-storage-daemon")) {
            return;
        }
        Path images = images("q");
        Path qd = Files.createDirectories(dir.resolve("qsd"));
        Path sock = qd.resolve("qmp.sock");
        Process qsd = new ProcessBuilder("qemu-storage-daemon", "--chardev",
                "socket,id=m,path=" + sock + ",server=on,wait=off", "--monitor", "chardev=m,mode=control")
                .redirectErrorStream(true).redirectOutput(qd.resolve("qsd.log").toFile()).start();
        try {
            waitFor(sock, qsd);
            try (QmpTestClient q = QmpTestClient.connectUnix(sock)) {
                Transcript t = new Transcript(new Peer("qemu", q, qd.resolve("nbd.sock"), images));
                s.run(t);
                assertLinesEqual(t.lines, jblockd);
            }
        } finally {
            qsd.destroy();
            qsd.waitFor(10, TimeUnit.SECONDS);
        }
    }

    private static void assertLinesEqual(List<String> qemu, List<String> jblockd) {
        assertThat(qemu).as("QEMU's transcript").isNotEmpty();
        for (int i = 0; i < Math.min(qemu.size(), jblockd.size()); i++) {
            assertThat(jblockd.get(i)).as("step %d (QEMU's line first)", i).isEqualTo(qemu.get(i));
        }
        assertThat(jblockd).hasSameSizeAs(qemu);
    }

    private static void waitFor(Path sock, Process p) throws IOException, InterruptedException {
        // QEMU creates its socket during start-up; the file is all there is to wait for
        for (int i = 0; i < 800 && !Files.exists(sock); i++) {
            if (!p.isAlive()) {
                throw new IOException("QEMU exited with " + p.exitValue() + " (see its log in " + sock.getParent() + ")");
            }
            Thread.sleep(25);
        }
    }
}
