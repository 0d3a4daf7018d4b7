package jblockd.qmp;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.JsonShape;
import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.QmpTestClient;

/**
 * query-block and query-named-block-nodes (plain and {@code flat}) of QEMU 7.2
 * ({@code qemu-system-x86_64 -M none}) and jblockd over the same image files, all opened
 * read-only by both at once so host allocation cannot move: a raw drive, a qcow2 v3 drive, a
 * qcow2 v2 (compat 0.10) drive, a dirty lazy-refcounts qcow2, a qcow2 marked corrupt, a qcow2
 * with internal snapshots and persistent bitmaps, a qcow2 over a qcow2 backing file named relatively in its
 * header, a blkdebug-over-qcow2 blockdev and null-co blockdevs. Compared: the full recursive
 * member names with JSON types, then every value (actual-size, format-specific,
 * backing-filename as written, full-backing-filename, backing_file_depth, dirty-flag, ...),
 * except auto-generated node names ({@code #blockNNN}, compared as a pattern) and jblockd's
 * {@code io-status} (its devices stand for guests). Node lists are compared as sets first, then for their order.
 */
class QueryBlockParityIT {
    @TempDir
    static Path dir;
    static Process qemu;
    static DaemonProcess jblockd;
    static QmpTestClient q;
    static QmpTestClient j;

    @BeforeAll
    static void start() throws Exception {
        ExternalTools.assumeTools("qemu-system-x86_64", "qemu-img");
        Path raw = dir.resolve("r.raw");
        Path v3 = dir.resolve("v3.qcow2");
        Path v2 = dir.resolve("v2.qcow2");
        Path base = dir.resolve("base.qcow2");
        Path top = dir.resolve("top.qcow2");
        Path dbg = dir.resolve("dbg.qcow2");
        ExternalTools.ok("qemu-img", "create", "-f", "raw", raw.toString(), "2M");
        ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 0x11 64k 192k", raw.toString());
        ExternalTools.ok("qemu-img", "create", "-f", "qcow2", v3.toString(), "3M");
        ExternalTools.ok("qemu-io", "-f", "qcow2", "-c", "write -P 0x22 0 128k", v3.toString());
        ExternalTools.ok("qemu-img", "create", "-f", "qcow2", "-o", "compat=0.10,cluster_size=4096",
                v2.toString(), "1M");
        ExternalTools.ok("qemu-img", "create", "-f", "qcow2", "-o", "cluster_size=32768", base.toString(), "4M");
        // a relative backing name: backing-filename shows it as written, full-backing-filename resolved
        ExternalTools.ok("qemu-img", "create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2",
                top.toString());
        ExternalTools.ok("qemu-img", "create", "-f", "qcow2", dbg.toString(), "2M");
        // internal snapshots (image.snapshots) and persistent bitmaps (format-specific bitmaps)
        Path tables = dir.resolve("tables.qcow2");
        ExternalTools.ok("qemu-img", "create", "-f", "qcow2", tables.toString(), "2M");
        ExternalTools.ok("qemu-img", "bitmap", "--add", tables.toString(), "b0");
        ExternalTools.ok("qemu-img", "bitmap", "--add", "-g", "128k", "--disable", tables.toString(), "b1");
        ExternalTools.ok("qemu-img", "snapshot", "-c", "snap1", tables.toString());
        // dirty: lazy refcounts and a writer killed before it could clear the dirty bit
        Path lazy = dir.resolve("lazy.qcow2");
        ExternalTools.ok("qemu-img", "create", "-f", "qcow2", "-o", "lazy_refcounts=on", lazy.toString(), "1M");
        ExternalTools.run("qemu-io", "-c", "write 0 64k", "-c", "sigraise 9", lazy.toString());
        // corrupt: incompatible feature bit 1 (docs/interop/qcow2.txt), set by hand
        Path corrupt = dir.resolve("corrupt.qcow2");
        ExternalTools.ok("qemu-img", "create", "-f", "qcow2", corrupt.toString(), "1M");
        try (FileChannel ch = FileChannel.open(corrupt, StandardOpenOption.WRITE)) {
            ch.write(ByteBuffer.wrap(new byte[] {2}), 79);
        }

        List<String> drives = List.of(
                "id=drive0,file=" + raw + ",format=raw,node-name=rawfmt,read-only=on,cache=writethrough",
                "id=drive1,file=" + v3 + ",format=qcow2,node-name=v3,read-only=on,cache=none",
                "id=drive2,file=" + v2 + ",format=qcow2,node-name=v2,read-only=on,cache=directsync",
                "id=drive3,file=" + top + ",format=qcow2,node-name=top,read-only=on,cache=none",
                "id=drive4,file=" + lazy + ",format=qcow2,node-name=lazy,read-only=on",
                "id=drive5,file=" + corrupt + ",format=qcow2,node-name=corrupt,read-only=on",
                "id=drive6,file=" + tables + ",format=qcow2,node-name=tables,read-only=on,cache=unsafe");
        List<String> blockdevs = List.of(
                "{\"driver\":\"blkdebug\",\"node-name\":\"dbg\",\"read-only\":true,\"image\":{\"driver\":\"qcow2\","
                        + "\"node-name\":\"dbgimg\",\"read-only\":true,\"file\":{\"driver\":\"file\","
                        + "\"read-only\":true,\"filename\":\"" + dbg + "\"}}}",
                "{\"driver\":\"null-co\",\"node-name\":\"nul\",\"size\":1048576}",
                "{\"driver\":\"null-co\",\"node-name\":\"nulz\",\"size\":65536,\"read-zeroes\":false}",
                "{\"driver\":\"null-co\",\"node-name\":\"nuld\"}");

        Path qsock = dir.resolve("qemu.sock");
        List<String> qcmd = new ArrayList<>(List.of("qemu-system-x86_64", "-M", "none", "-nodefaults",
                "-display", "none", "-qmp", "unix:" + qsock + ",server=on,wait=off"));
        List<String> jargs = new ArrayList<>();
        for (String d : drives) {
            qcmd.addAll(List.of("-drive", "if=none," + d));
            jargs.addAll(List.of("--drive", d));
        }
        for (String b : blockdevs) {
            qcmd.addAll(List.of("-blockdev", b));
            jargs.addAll(List.of("--blockdev", b));
        }
        qemu = new ProcessBuilder(qcmd).redirectErrorStream(true)
                .redirectOutput(dir.resolve("qemu.log").toFile()).start();
        for (int i = 0; i < 400 && !Files.exists(qsock) && qemu.isAlive(); i++) {
            Thread.sleep(25);
        }
        q = QmpTestClient.connectUnix(qsock);
        Files.createDirectories(dir.resolve("j"));
        jblockd = DaemonProcess.start(dir.resolve("j"), jargs.toArray(String[]::new));
        j = jblockd.connect();
    }

    @AfterAll
    static void stop() throws InterruptedException {
        JsonShape.stopPair(q, j, qemu, jblockd);
    }

    /**
     * The live dirty bitmaps (BlockDeviceInfo dirty-bitmaps) are compared by
     * jblockd.commands.BitmapsQemuIT, loaded persistent ones included; here they are taken out
     * of both answers, so this comparison does not depend on whether the qcow2 driver of the
     * build loads persistent bitmaps. The image's own view of them (format-specific bitmaps)
     * must match.
     */
    private static JsonNode withoutLiveBitmaps(JsonNode list) {
        JsonNode copy = list.deepCopy();
        for (JsonNode e : copy) {
            ((ObjectNode) e).remove("dirty-bitmaps");
            if (e.get("inserted") instanceof ObjectNode inserted) {
                inserted.remove("dirty-bitmaps");
            }
        }
        return copy;
    }

    /** A copy with auto node names reduced to "#block" and the elements in a stable order. */
    private static JsonNode normalized(JsonNode list, String sortKey) {
        List<JsonNode> items = new ArrayList<>();
        for (JsonNode e : list) {
            ObjectNode c = e.deepCopy();
            ObjectNode info = sortKey.equals("device") ? (ObjectNode) c.get("inserted") : c;
            if (info != null && info.path("node-name").asText().matches("#block\\d+")) {
                info.put("node-name", "#block");
            }
            items.add(c);
        }
        items.sort(Comparator.comparing((JsonNode e) -> e.path(sortKey).asText())
                .thenComparing(e -> e.path("drv").asText())
                .thenComparing(e -> e.path("file").asText())
                .thenComparing(e -> e.toString()));
        ArrayNode out = JsonNodeFactory.instance.arrayNode();
        items.forEach(out::add);
        return out;
    }

    private static void assertSame(String what, JsonNode qemuAnswer, JsonNode ourAnswer, String sortKey) {
        JsonNode qemuList = withoutLiveBitmaps(qemuAnswer);
        JsonNode ourList = withoutLiveBitmaps(ourAnswer);
        Map<String, String> qs = JsonShape.of(qemuList);
        Map<String, String> js = JsonShape.of(ourList);
        js.remove("[].io-status"); // jblockd's devices have a guest with werror/rerror
        assertThat(js).as(what + " member names and types").isEqualTo(qs);
        assertThat(normalized(ourList, sortKey)).as(what + " values").isEqualTo(normalized(qemuList, sortKey));
    }

    @Test
    void queryBlockMatchesQemu() throws Exception {
        JsonNode qr = q.executeOk("query-block");
        JsonNode jr = j.executeOk("query-block").deepCopy();
        jr.forEach(d -> ((ObjectNode) d).remove("io-status"));
        assertThat(qr.size()).isEqualTo(7);
        assertSame("query-block", qr, jr, "device");
        // spot checks of what the comparison covers, against the image headers qemu-img wrote
        JsonNode top = find(jr, "device", "drive3").get("inserted");
        assertThat(top.get("backing_file_depth").asInt()).isEqualTo(1);
        assertThat(top.get("backing_file").asText()).isEqualTo(dir.resolve("base.qcow2").toString());
        assertThat(top.at("/image/backing-filename").asText()).isEqualTo("base.qcow2");
        assertThat(top.at("/image/full-backing-filename").asText()).isEqualTo(dir.resolve("base.qcow2").toString());
        assertThat(top.at("/image/backing-filename-format").asText()).isEqualTo("qcow2");
        assertThat(top.at("/image/backing-image/cluster-size").asInt()).isEqualTo(32768);
        assertThat(top.at("/image/format-specific/data/compat").asText()).isEqualTo("1.1");
        JsonNode v2 = find(jr, "device", "drive2").get("inserted");
        assertThat(memberNamesOf(v2.at("/image/format-specific/data")))
                .containsExactlyInAnyOrder("compat", "compression-type", "refcount-bits");
        JsonNode lazy = find(jr, "device", "drive4").get("inserted");
        assertThat(lazy.at("/image/dirty-flag").asBoolean()).isTrue();
        assertThat(lazy.at("/image/format-specific/data/lazy-refcounts").asBoolean()).isTrue();
        assertThat(find(jr, "device", "drive5").at("/inserted/image/format-specific/data/corrupt").asBoolean())
                .isTrue();
        JsonNode tables = find(jr, "device", "drive6").at("/inserted/image");
        assertThat(tables.at("/snapshots/0/name").asText()).isEqualTo("snap1");
        assertThat(tables.at("/format-specific/data/bitmaps/1/granularity").asLong()).isEqualTo(131072);
        // cache modes (bdrv_parse_cache_mode): the device's write cache, the nodes' direct / no-flush
        assertThat(find(jr, "device", "drive0").at("/inserted/cache").toString())
                .isEqualTo("{\"writeback\":false,\"direct\":false,\"no-flush\":false}");
        assertThat(find(jr, "device", "drive2").at("/inserted/cache").toString())
                .isEqualTo("{\"writeback\":false,\"direct\":true,\"no-flush\":false}");
        assertThat(find(jr, "device", "drive6").at("/inserted/cache").toString())
                .isEqualTo("{\"writeback\":true,\"direct\":false,\"no-flush\":true}");
        JsonNode raw = find(jr, "device", "drive0").get("inserted");
        String[] blocks = ExternalTools.ok("stat", "-c", "%b %B", dir.resolve("r.raw").toString()).trim().split(" ");
        assertThat(raw.at("/image/actual-size").asLong())
                .isEqualTo(Long.parseLong(blocks[0]) * Long.parseLong(blocks[1]))
                .isLessThan(2L << 20); // sparse: not the virtual size
    }

    @Test
    void namedBlockNodesMatchQemu() throws Exception {
        JsonNode qr = q.executeOk("query-named-block-nodes");
        JsonNode jr = j.executeOk("query-named-block-nodes");
        assertSame("query-named-block-nodes", qr, jr, "node-name");
        JsonNode dbg = find(jr, "node-name", "dbg");
        // blkdebug is a filter: its image is its backing-image, and it has no actual-size
        assertThat(dbg.get("backing_file_depth").asInt()).isEqualTo(1);
        assertThat(dbg.has("backing_file")).isFalse();
        assertThat(dbg.at("/image/backing-image/format").asText()).isEqualTo("qcow2");
        assertThat(dbg.get("image").has("actual-size")).isFalse();
        assertThat(find(jr, "node-name", "nul").get("image").has("dirty-flag")).isFalse();
        // a backing file named in the header inherits the overlay's cache.direct / no-flush
        // (block.c bdrv_backing_options): drive3 is cache=none, so its base and base's file are direct
        String base = dir.resolve("base.qcow2").toString();
        for (JsonNode list : List.of(qr, jr)) {
            int seen = 0;
            for (JsonNode n : list) {
                if (n.path("file").asText().equals(base)) {
                    seen++;
                    JsonNode cache = n.path("cache");
                    assertThat(List.of(cache.path("writeback").asBoolean(), cache.path("direct").asBoolean(),
                            cache.path("no-flush").asBoolean(true))).as("%s %s", n.path("node-name"), cache)
                            .containsExactly(true, true, false);
                }
            }
            assertThat(seen).as("base.qcow2's format and file nodes").isEqualTo(2);
        }
    }

    /**
     * QEMU lists the most recently named node first, and names a format node after its file
     * child but before its backing chain, blkdebug before its image. Compared within the
     * -drive nodes and within the -blockdev nodes: QEMU's command line opens every -blockdev
     * before any -drive, jblockd takes its options in the order given.
     */
    @Test
    void namedBlockNodesComeInQemuOrder() throws Exception {
        for (boolean fromBlockdev : List.of(true, false)) {
            List<String> qemuOrder = order(q.executeOk("query-named-block-nodes"), fromBlockdev);
            List<String> ourOrder = order(j.executeOk("query-named-block-nodes"), fromBlockdev);
            assertThat(ourOrder).as(fromBlockdev ? "-blockdev nodes" : "-drive nodes").isEqualTo(qemuOrder);
        }
    }

    private static List<String> order(JsonNode list, boolean fromBlockdev) {
        List<String> out = new ArrayList<>();
        for (JsonNode n : list) {
            String file = n.path("file").asText();
            boolean blockdev = n.path("drv").asText().equals("null-co") || file.startsWith("blkdebug:")
                    || file.equals(dir.resolve("dbg.qcow2").toString());
            if (blockdev == fromBlockdev) {
                String name = n.path("node-name").asText();
                out.add(n.path("drv").asText() + " " + file + " "
                        + (name.startsWith("#block") ? "#block" : name));
            }
        }
        return out;
    }

    @Test
    void flatNamedBlockNodesMatchQemu() throws Exception {
        Map<String, Object> flat = Map.of("flat", true);
        JsonNode qr = q.executeOk("query-named-block-nodes", flat);
        JsonNode jr = j.executeOk("query-named-block-nodes", flat);
        assertSame("query-named-block-nodes flat", qr, jr, "node-name");
        assertThat(find(jr, "node-name", "top").get("image").has("backing-image")).isFalse();
    }

    private static JsonNode find(JsonNode list, String key, String value) {
        for (JsonNode e : list) {
            if (e.path(key).asText().equals(value)) {
                return e;
            }
        }
        throw new AssertionError("no " + key + "=" + value + " in " + list);
    }

    private static List<String> memberNamesOf(JsonNode o) {
        List<String> names = new ArrayList<>();
        o.fieldNames().forEachRemaining(names::add);
        return names;
    }
}
