package jblockd.commands;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.CompletableFuture;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.NbdPeer;
import jblockd.testsupport.QmpTestClient;

/**
 * Fleecing, both forms (reference/incremental.md §5.3, §5.4), side by side with
 * qemu-storage-daemon 7.2 (the guest an NBD client, qemu-io): libvirt's pull-mode sequences
 * give the same replies and the same reader output on both daemons, and what a reader pulls
 * ({@code qemu-img convert} from the fleecing export) is the disk at the fleecing point, also
 * while guests overwrite the disk at random over several connections.
 * <p>
 * The 7.x form is run without blockdev-reopen: the guest's export is made on the
 * copy-before-write node once it is added (QEMU's documented alternative to re-pointing a
 * parent), so every guest write passes it.
 */
class FleecingQemuIT {
    @TempDir
    Path dir;

    private interface Scenario {
        List<String> run(NbdPeer p) throws Exception;
    }

    /** Runs the scenario on jblockd and, when installed, on QEMU; their transcripts must be equal. */
    private void sameOnBoth(Scenario s) throws Exception {
        assumeTrue(ExternalTools.present("qemu-img") && ExternalTools.present("qemu-io"));
        List<String> mine;
        try (NbdPeer j = NbdPeer.jblockd(dir)) {
            mine = s.run(j);
        }
        if (ExternalTools.present("qemu-storage-daemon")) {
            List<String> theirs;
            try (NbdPeer q = NbdPeer.qsd(dir)) {
                theirs = s.run(q);
            }
            assertThat(mine).as("jblockd's transcript vs qemu-storage-daemon's").isEqualTo(theirs);
        }
    }

    // ------------------------------------------------------------------ helpers

    /** The reply of a command as a line (error class and text, or the return value). */
    private static String call(NbdPeer p, List<String> log, String cmd, Map<String, Object> args) throws IOException {
        JsonNode r = p.qmp().execute(cmd, args);
        String line = cmd + " " + (r.has("error") ? "error " + r.get("error").get("class").asText() + ": "
                + r.get("error").get("desc").asText() : "return " + r.get("return"));
        log.add(line.replace(p.dir().toString(), "DIR"));
        return line;
    }

    /** qemu-io's output without its timing lines. */
    private static String io(NbdPeer p, String uri, boolean readOnly, String... cmds) throws Exception {
        List<String> argv = new ArrayList<>(List.of("qemu-io", "-f", "raw"));
        if (readOnly) {
            argv.add("-r");
        }
        for (String c : cmds) {
            argv.add("-c");
            argv.add(c);
        }
        argv.add(uri);
        ExternalTools.Result r = ExternalTools.run(argv.toArray(String[]::new));
        StringBuilder out = new StringBuilder("exit " + r.exit());
        for (String l : r.out().split("\n")) {
            if (!l.contains("ops/sec") && !l.isBlank()) {
                out.append(" | ").append(l.replace(p.dir().toString(), "DIR"));
            }
        }
        return out.toString();
    }

    private static Map<String, Object> m(Object... kv) {
        Map<String, Object> out = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) {
            out.put((String) kv[i], kv[i + 1]);
        }
        return out;
    }

    /** A 64 MiB qcow2 disk with 0x11 at 0..2M and 0x22 at 4M..5M, opened as {@code fmt}. */
    private static void disk(NbdPeer p, List<String> log) throws Exception {
        Path img = p.dir().resolve("disk.qcow2");
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", img.toString(), "64M");
        ExternalTools.ok("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 2M", "-c", "write -P 0x22 4M 1M",
                img.toString());
        call(p, log, "blockdev-add", m("driver", "qcow2", "node-name", "fmt", "file",
                m("driver", "file", "filename", img.toString())));
    }

    private static Path scratch(NbdPeer p, String name, boolean backedByDisk) throws Exception {
        Path f = p.dir().resolve(name);
        if (backedByDisk) {
            ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    p.dir().resolve("disk.qcow2").toString(), f.toString());
        } else {
            ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", f.toString(), "64M");
        }
        return f;
    }

    /** Pulls the whole export into a raw file, as a backup tool does. */
    private static Path pull(NbdPeer p, String export, String file) throws Exception {
        Path out = p.dir().resolve(file);
        ExternalTools.ok("qemu-img", "convert", "-f", "raw", "-O", "raw", p.nbd(export), out.toString());
        return out;
    }

    private static void assertSameImage(Path a, Path b, String what) throws Exception {
        ExternalTools.Result r = ExternalTools.run("qemu-img", "compare", "-f", "raw", "-F", "raw", a.toString(),
                b.toString());
        assertThat(r.exit()).as("%s: %s", what, r.out()).isZero();
    }

    // ------------------------------------------------------------------ classic fleecing

    /** The classic form up to the point where the scratch is exported (guest export on fmt). */
    private static void classicStart(NbdPeer p, List<String> log) throws Exception {
        disk(p, log);
        call(p, log, "block-export-add", m("type", "nbd", "id", "guest", "node-name", "fmt", "name", "vda",
                "writable", true));
        call(p, log, "block-dirty-bitmap-add", m("node", "fmt", "name", "chk-a", "persistent", true));
        log.add(io(p, p.nbd("vda"), false, "write -P 0x33 4M 64k"));
        Path fl = scratch(p, "fleece.qcow2", true);
        call(p, log, "blockdev-add", m("driver", "qcow2", "node-name", "fleece", "file",
                m("driver", "file", "filename", fl.toString()), "backing", "fmt"));
        call(p, log, "transaction", m("actions", List.of(
                m("type", "block-dirty-bitmap-add", "data", m("node", "fmt", "name", "backup-vda", "disabled", true)),
                m("type", "block-dirty-bitmap-merge", "data", m("node", "fmt", "target", "backup-vda",
                        "bitmaps", List.of("chk-a"))),
                m("type", "blockdev-backup", "data", m("device", "fmt", "target", "fleece", "sync", "none",
                        "job-id", "fleecing")))));
        call(p, log, "block-export-add", m("type", "nbd", "id", "backup", "node-name", "fleece", "name",
                "vda-backup", "bitmaps", List.of("backup-vda"), "allocation-depth", true));
    }

    private static void classicEnd(NbdPeer p, List<String> log) throws Exception {
        call(p, log, "block-export-del", m("id", "backup"));
        call(p, log, "block-job-cancel", m("device", "fleecing"));
        awaitNoJobs(p);
        call(p, log, "blockdev-del", m("node-name", "fleece"));
        call(p, log, "block-dirty-bitmap-remove", m("node", "fmt", "name", "backup-vda"));
    }

    private static void awaitNoJobs(NbdPeer p) throws Exception {
        for (int i = 0; i < 1000; i++) {
            if (p.qmp().executeOk("query-block-jobs").isEmpty()) {
                return;
            }
            Thread.sleep(10); // polling the daemon's state, bounded
        }
        throw new AssertionError(p.name() + ": the job did not go");
    }

    @Test
    void classicPullSequenceAsLibvirt() throws Exception {
        sameOnBoth(p -> {
            List<String> log = new ArrayList<>();
            Path before = p.dir().resolve("before.raw");
            classicStart(p, log);
            // the disk at the fleecing point, read through the guest's export before it writes
            ExternalTools.ok("qemu-img", "convert", "-f", "raw", "-O", "raw", p.nbd("vda"), before.toString());
            log.add(io(p, p.nbd("vda"), false, "write -P 0x44 0 64k", "write -P 0x55 4M 64k"));
            log.add(io(p, p.nbd("vda-backup"), true, "read -P 0x11 0 64k", "read -P 0x33 4M 64k",
                    "read -P 0x22 4160k 960k"));
            log.add(io(p, p.nbd("vda"), true, "read -P 0x44 0 64k", "read -P 0x55 4M 64k"));
            if (ExternalTools.present("nbdinfo")) {
                log.add(ExternalTools.ok("nbdinfo", "--map=qemu:allocation-depth", p.nbd("vda-backup")));
                log.add(ExternalTools.ok("nbdinfo", "--map=qemu:dirty-bitmap:backup-vda", p.nbd("vda-backup")));
            }
            // a read-only export: no discard (qemu-io opens it writable and is refused)
            log.add(io(p, p.nbd("vda-backup"), false, "discard 0 64k"));
            assertSameImage(pull(p, "vda-backup", "pulled.raw"), before, p.name() + " pulled vs the fleecing point");
            JsonNode job = p.qmp().executeOk("query-block-jobs").get(0);
            log.add("job offset " + job.get("offset") + " len " + job.get("len"));
            classicEnd(p, log);
            return log;
        });
    }

    // ------------------------------------------------------------------ QEMU 7.x fleecing

    private static void cbwStart(NbdPeer p, List<String> log, Map<String, Object> extra) throws Exception {
        disk(p, log);
        Path tmp = scratch(p, "tmp.qcow2", false);
        call(p, log, "blockdev-add", m("driver", "qcow2", "node-name", "tmp", "discard", "unmap", "file",
                m("driver", "file", "filename", tmp.toString())));
        call(p, log, "block-dirty-bitmap-add", m("node", "fmt", "name", "chk-a", "persistent", true));
        call(p, log, "transaction", m("actions", List.of(
                m("type", "block-dirty-bitmap-add", "data", m("node", "fmt", "name", "backup-vda", "disabled", true)),
                m("type", "block-dirty-bitmap-merge", "data", m("node", "fmt", "target", "backup-vda",
                        "bitmaps", List.of("chk-a"))))));
        Map<String, Object> cbw = m("driver", "copy-before-write", "node-name", "fl-cbw", "file", "fmt",
                "target", "tmp");
        cbw.putAll(extra);
        call(p, log, "blockdev-add", cbw);
        call(p, log, "block-export-add", m("type", "nbd", "id", "guest", "node-name", "fl-cbw", "name", "vda",
                "writable", true));
        call(p, log, "blockdev-add", m("driver", "snapshot-access", "node-name", "fl-access", "file", "fl-cbw",
                "discard", "unmap"));
        call(p, log, "block-export-add", m("type", "nbd", "id", "backup", "node-name", "fl-access", "name",
                "vda-backup", "writable", true, "bitmaps", List.of(m("node", "fmt", "name", "backup-vda"))));
    }

    private static void cbwEnd(NbdPeer p, List<String> log) throws Exception {
        call(p, log, "block-export-del", m("id", "backup"));
        call(p, log, "blockdev-del", m("node-name", "fl-access"));
        call(p, log, "block-export-del", m("id", "guest"));
        awaitNoExport(p, "guest");
        call(p, log, "blockdev-del", m("node-name", "fl-cbw"));
        call(p, log, "blockdev-del", m("node-name", "tmp"));
        call(p, log, "block-dirty-bitmap-remove", m("node", "fmt", "name", "backup-vda"));
    }

    private static void awaitNoExport(NbdPeer p, String id) throws Exception {
        for (int i = 0; i < 1000; i++) {
            boolean gone = true;
            for (JsonNode e : p.qmp().executeOk("query-block-exports")) {
                gone &= !e.get("id").asText().equals(id);
            }
            if (gone) {
                return;
            }
            Thread.sleep(10); // an export with a client goes when the client has gone; bounded
        }
        throw new AssertionError(p.name() + ": export " + id + " did not go");
    }

    @Test
    void qemu7PullSequence() throws Exception {
        sameOnBoth(p -> {
            List<String> log = new ArrayList<>();
            cbwStart(p, log, Map.of());
            Path before = p.dir().resolve("before.raw");
            ExternalTools.ok("qemu-img", "convert", "-f", "raw", "-O", "raw", p.nbd("vda"), before.toString());
            log.add(io(p, p.nbd("vda"), false, "write -P 0x44 0 64k", "write -P 0x55 4M 64k", "write -P 0x66 8M 64k"));
            log.add(io(p, p.nbd("vda-backup"), true, "read -P 0x11 0 64k", "read -P 0x22 4M 1M", "read -P 0 8M 64k"));
            log.add(io(p, p.nbd("vda"), true, "read -P 0x44 0 64k", "read -P 0x66 8M 64k"));
            assertSameImage(pull(p, "vda-backup", "pulled.raw"), before, p.name() + " pulled vs the fleecing point");
            if (ExternalTools.present("nbdinfo")) {
                log.add(ExternalTools.ok("nbdinfo", "--map=qemu:dirty-bitmap:backup-vda", p.nbd("vda-backup")));
            }
            log.add(io(p, p.nbd("vda-backup"), false, "write -P 1 0 64k"));
            // the reader gives clusters up: they are no longer readable, the rest still is
            log.add(io(p, p.nbd("vda-backup"), false, "discard 0 128k", "discard 4M 64k", "read 0 64k",
                    "read 64k 64k", "read 4M 64k", "read -P 0x11 128k 64k", "read -P 0x22 4160k 64k"));
            log.add(io(p, p.nbd("vda"), false, "write -P 0x77 0 256k"));
            log.add(io(p, p.nbd("vda-backup"), true, "read -P 0x11 128k 64k"));
            cbwEnd(p, log);
            return log;
        });
    }

    /** bitmap: only its clusters are kept and readable; the rest is EACCES (EINVAL over NBD). */
    @Test
    void qemu7BitmapRestrictsTheSnapshot() throws Exception {
        sameOnBoth(p -> {
            List<String> log = new ArrayList<>();
            disk(p, log);
            call(p, log, "block-dirty-bitmap-add", m("node", "fmt", "name", "y", "disabled", true));
            // mark 1M+64K dirty in y through a guest write while it is enabled
            call(p, log, "block-dirty-bitmap-enable", m("node", "fmt", "name", "y"));
            call(p, log, "block-export-add", m("type", "nbd", "id", "w", "node-name", "fmt", "name", "w",
                    "writable", true));
            log.add(io(p, p.nbd("w"), false, "write -P 0x99 1M 64k"));
            call(p, log, "block-export-del", m("id", "w"));
            awaitNoExport(p, "w");
            call(p, log, "block-dirty-bitmap-disable", m("node", "fmt", "name", "y"));
            Path tmp = scratch(p, "tmp.qcow2", false);
            call(p, log, "blockdev-add", m("driver", "qcow2", "node-name", "tmp", "file",
                    m("driver", "file", "filename", tmp.toString())));
            call(p, log, "blockdev-add", m("driver", "copy-before-write", "node-name", "fl-cbw", "file", "fmt",
                    "target", "tmp", "bitmap", m("node", "fmt", "name", "y")));
            call(p, log, "block-export-add", m("type", "nbd", "id", "guest", "node-name", "fl-cbw", "name", "vda",
                    "writable", true));
            call(p, log, "blockdev-add", m("driver", "snapshot-access", "node-name", "fl-access", "file", "fl-cbw"));
            call(p, log, "block-export-add", m("type", "nbd", "id", "backup", "node-name", "fl-access", "name",
                    "vda-backup"));
            log.add(io(p, p.nbd("vda"), false, "write -P 0xaa 1M 128k", "write -P 0xbb 0 64k"));
            log.add(io(p, p.nbd("vda-backup"), true, "read -P 0x99 1M 64k", "read 0 64k", "read 1M 128k"));
            if (ExternalTools.present("nbdinfo")) {
                ExternalTools.Result r = ExternalTools.run("nbdinfo", "--map", p.nbd("vda-backup"));
                log.add("nbdinfo --map exit " + r.exit());
            }
            call(p, log, "block-export-del", m("id", "backup"));
            call(p, log, "blockdev-del", m("node-name", "fl-access"));
            call(p, log, "block-export-del", m("id", "guest"));
            awaitNoExport(p, "guest");
            call(p, log, "blockdev-del", m("node-name", "fl-cbw"));
            return log;
        });
    }

    /** QEMU 7.2's refusals of the two drivers, and what it accepts that one might expect refused. */
    @Test
    void refusals() throws Exception {
        sameOnBoth(p -> {
            List<String> log = new ArrayList<>();
            disk(p, log);
            Path tmp = scratch(p, "tmp.qcow2", false);
            Path small = p.dir().resolve("small.qcow2");
            ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", small.toString(), "32M");
            Path ro = scratch(p, "ro.qcow2", false);
            call(p, log, "blockdev-add", m("driver", "qcow2", "node-name", "tmp", "file",
                    m("driver", "file", "filename", tmp.toString())));
            call(p, log, "blockdev-add", m("driver", "qcow2", "node-name", "small", "file",
                    m("driver", "file", "filename", small.toString())));
            call(p, log, "blockdev-add", m("driver", "qcow2", "node-name", "rotgt", "read-only", true, "file",
                    m("driver", "file", "filename", ro.toString(), "read-only", true)));
            call(p, log, "block-dirty-bitmap-add", m("node", "fmt", "name", "z", "granularity", 4096));
            List<Map<String, Object>> tries = List.of(
                    m("file", "fmt"),
                    m("target", "tmp"),
                    m("file", "fmt", "target", "nosuch"),
                    m("file", "fmt", "target", "small"),
                    m("file", "fmt", "target", "rotgt"),
                    m("file", "fmt", "target", "tmp", "bitmap", m("node", "fmt", "name", "nob")),
                    m("file", "fmt", "target", "tmp", "bitmap", m("node", "nonode", "name", "nob")),
                    m("file", "fmt", "target", "tmp", "bitmap", m("node", "fmt", "name", "z")),
                    m("file", "fmt", "target", "tmp", "on-cbw-error", "bogus"),
                    m("file", "fmt", "target", "tmp", "cbw-timeout", -1),
                    m("file", "fmt", "target", "tmp", "on-cbw-error", "break-snapshot", "cbw-timeout", 5),
                    m("file", "fmt", "target", "tmp", "read-only", true));
            for (Map<String, Object> t : tries) {
                Map<String, Object> args = m("driver", "copy-before-write", "node-name", "c1");
                args.putAll(t);
                if (call(p, log, "blockdev-add", args).contains(" return ")) {
                    call(p, log, "blockdev-del", m("node-name", "c1"));
                }
            }
            call(p, log, "blockdev-add", m("driver", "snapshot-access", "node-name", "sa1"));
            // over a node without a snapshot: opens, every request ENOTSUP
            call(p, log, "blockdev-add", m("driver", "snapshot-access", "node-name", "sa0", "file", "fmt"));
            call(p, log, "block-export-add", m("type", "nbd", "id", "sa0", "node-name", "sa0", "name", "sa0"));
            log.add(io(p, p.nbd("sa0"), true, "read 0 64k"));
            call(p, log, "block-export-del", m("id", "sa0"));
            call(p, log, "blockdev-del", m("node-name", "sa0"));
            return log;
        });
    }

    // ------------------------------------------------------------------ under load

    /**
     * Guests overwrite the disk at random over three NBD connections while a reader pulls the
     * fleecing export; the reader must get the disk as it was at the fleecing point.
     */
    @ParameterizedTest(name = "{0} seed {1}")
    @CsvSource({"classic, 1", "classic, 2", "classic, 3", "cbw, 1", "cbw, 2", "cbw, 3"})
    void fleecingUnderLoad(String form, long seed) throws Exception {
        assumeTrue(ExternalTools.present("qemu-img") && ExternalTools.present("qemu-io"));
        try (NbdPeer p = NbdPeer.jblockd(dir)) {
            List<String> log = new ArrayList<>();
            Path before = p.dir().resolve("before.raw");
            if (form.equals("classic")) {
                classicStart(p, log);
            } else {
                cbwStart(p, log, Map.of());
            }
            assertThat(log).as("seed %d: setup", seed).noneMatch(l -> l.contains(" error "));
            String guest = p.nbd("vda");
            ExternalTools.ok("qemu-img", "convert", "-f", "raw", "-O", "raw", guest, before.toString());
            SplittableRandom rnd = new SplittableRandom(seed);
            List<CompletableFuture<ExternalTools.Result>> guests = new ArrayList<>();
            for (int g = 0; g < 3; g++) {
                List<String> argv = new ArrayList<>(List.of("qemu-io", "-f", "raw"));
                for (int i = 0; i < 300; i++) {
                    long off = rnd.nextLong(64L << 20 >> 12) << 12;
                    long len = Math.min((64L << 20) - off, (1 + rnd.nextInt(32)) * 4096L);
                    argv.add("-c");
                    argv.add("write -P " + (1 + rnd.nextInt(255)) + " " + off + " " + len);
                }
                argv.add(guest);
                guests.add(CompletableFuture.supplyAsync(() -> {
                    try {
                        return ExternalTools.run(argv.toArray(String[]::new));
                    } catch (Exception e) {
                        throw new IllegalStateException(e);
                    }
                }));
            }
            List<Path> pulls = new ArrayList<>();
            for (int r = 0; r < 3; r++) {
                pulls.add(pull(p, "vda-backup", "pulled" + r + ".raw"));
            }
            for (CompletableFuture<ExternalTools.Result> g : guests) {
                assertThat(g.get().exit()).as("seed %d: a guest failed: %s", seed, g.get().out()).isZero();
            }
            pulls.add(pull(p, "vda-backup", "pulled-after.raw"));
            for (Path pulled : pulls) {
                assertSameImage(pulled, before, form + " seed " + seed + ": " + pulled.getFileName()
                        + " vs the fleecing point");
            }
            if (form.equals("classic")) {
                classicEnd(p, log);
            } else {
                cbwEnd(p, log);
            }
            assertThat(log).as("seed %d: teardown", seed).noneMatch(l -> l.contains(" error "));
        }
    }
}
