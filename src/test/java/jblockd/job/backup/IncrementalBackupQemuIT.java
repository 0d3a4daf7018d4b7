package jblockd.job.backup;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import jblockd.testsupport.NbdPeer;
import jblockd.testsupport.QmpTestClient;

/**
 * Incremental backup as QEMU 7.2 does it (reference/incremental.md), run the same way against
 * qemu-storage-daemon and jblockd, with the guest an NBD client (qemu-io) on each:
 * <ul>
 *   <li>the bitmap-mode matrix (§3): what the bitmap holds after a backup that succeeded and
 *   after one whose target failed (blkdebug), for every sync/bitmap-mode pair QEMU allows;</li>
 *   <li>the libvirt push sequence (§4): a full backup that starts a checkpoint bitmap in one
 *   transaction, then an incremental one through a disposable merged copy of it; the
 *   incremental target holds only the changed clusters and restores the disk;</li>
 *   <li>a chain of a full backup and five incrementals while the guest keeps writing at random;
 *   every restored point equals the disk as it was when its backup started.</li>
 * </ul>
 * Expected figures are QEMU's observed ones; where they depend on how far a failed job got
 * (QEMU copies in parallel, so it gets further), the rule behind them is checked instead.
 */
class IncrementalBackupQemuIT {
    private static final Duration T = Duration.ofSeconds(60);
    private static final long MIB = 1 << 20;
    private static final long K64 = 64 * 1024;

    @TempDir
    Path dir;

    // ------------------------------------------------------------------ the peers

    /** Runs {@code scenario} on jblockd and, when installed, on qemu-storage-daemon. */
    private void onBothPeers(Scenario scenario) throws Exception {
        assumeTrue(Proc.present("qemu-img") && Proc.present("qemu-io"));
        try (NbdPeer j = NbdPeer.jblockd(dir)) {
            scenario.run(j);
        }
        if (Proc.present("qemu-storage-daemon")) {
            try (NbdPeer q = NbdPeer.qsd(dir)) {
                scenario.run(q);
            }
        }
    }

    private interface Scenario {
        void run(NbdPeer p) throws Exception;
    }

    // ------------------------------------------------------------------ §3 the bitmap-mode matrix

    /**
     * incremental.md §3: bitmap b0 with 4 dirty granules (0, 16M, 32M, 48M; 64 KiB each) on a
     * 64 MiB qcow2 source (sync=top copies its allocated clusters); the job starts at speed 1, the guest writes 64 KiB at 60M, then the
     * speed is lifted. The source is a qcow2, the target raw. {@code okLens}: the job's len
     * (sync=top: 262144 or 327680, as the guest's write at 60M lands before or after the job's
     * allocation scan gets there); {@code okAfter}/{@code failAfter}: b0's count
     * afterwards; {@code failAfter} -1 means "what the job did not copy plus the new write" (mode
     * always: the copy bitmap's remainder is merged back in).
     */
    @ParameterizedTest(name = "sync={0} bitmap-mode={1}")
    @CsvSource({
            "incremental, on-success, 262144, 65536, 327680",
            "bitmap,      on-success, 262144, 65536, 327680",
            "bitmap,      never,      262144, 327680, 327680",
            "bitmap,      always,     262144, 65536, -1",
            "full,        on-success, 67108864, 65536, 327680",
            "full,        always,     67108864, 65536, -1",
            "top,         on-success, 262144/327680, 65536, 327680",
            "top,         always,     262144/327680, 65536, -1",
    })
    void bitmapModeMatrix(String sync, String mode, String okLens, long okAfter, long failAfter) throws Exception {
        List<Long> lens = Arrays.stream(okLens.split("/")).map(Long::valueOf).toList();
        onBothPeers(p -> {
            JobEnd ok = matrixRun(p, sync, mode, false);
            assertThat(ok.error()).as("%s ok run: error", p.name()).isNull();
            assertThat(ok.len()).as("%s ok run: len", p.name()).isIn(lens);
            assertThat(ok.offset()).as("%s ok run: offset", p.name()).isEqualTo(ok.len());
            assertThat(ok.countAfter()).as("%s ok run: b0 count afterwards", p.name()).isEqualTo(okAfter);

            JobEnd fail = matrixRun(p, sync, mode, true);
            assertThat(fail.error()).as("%s failing run: error", p.name()).isEqualTo("Input/output error");
            assertThat(fail.len()).as("%s failing run: len", p.name()).isIn(lens);
            assertThat(fail.offset()).as("%s failing run: offset", p.name()).isLessThan(fail.len());
            long expected = failAfter >= 0 ? failAfter : fail.len() - fail.offset() + K64;
            assertThat(fail.countAfter()).as("%s failing run: b0 count afterwards (offset %d)", p.name(),
                    fail.offset()).isEqualTo(expected);
        });
    }

    private record JobEnd(long offset, long len, String error, long countAfter) {
    }

    private int runNo;

    private JobEnd matrixRun(NbdPeer p, String sync, String mode, boolean failTarget) throws Exception {
        QmpTestClient c = p.qmp();
        String tag = "m" + (runNo++);
        Path src = p.dir().resolve(tag + "-src.qcow2");
        Path tgt = p.dir().resolve(tag + "-tgt.raw");
        Proc.ok("qemu-img", "create", "-q", "-f", "qcow2", src.toString(), "64M");
        Proc.ok("qemu-img", "create", "-q", "-f", "raw", tgt.toString(), "64M");
        c.executeOk("blockdev-add", Map.of("driver", "qcow2", "node-name", "src",
                "file", Map.of("driver", "file", "filename", src.toString())));
        c.executeOk("block-export-add", Map.of("type", "nbd", "id", "guest", "node-name", "src", "name", "src",
                "writable", true));
        c.executeOk("block-dirty-bitmap-add", Map.of("node", "src", "name", "b0"));
        guest(p, "write -P 0x11 0 64k", "write -P 0x12 16M 64k", "write -P 0x13 32M 64k", "write -P 0x14 48M 64k");
        Map<String, Object> file = Map.of("driver", "file", "filename", tgt.toString());
        Object target = failTarget
                ? Map.of("driver", "blkdebug", "image", file, "inject-error",
                        List.of(Map.of("event", "write_aio", "errno", 5, "sector", 32768)))
                : file;
        c.executeOk("blockdev-add", Map.of("driver", "raw", "node-name", "tgt", "file", target));
        Map<String, Object> backup = new LinkedHashMap<>(Map.of("job-id", "j", "device", "src", "target", "tgt",
                "sync", sync, "bitmap", "b0", "bitmap-mode", mode, "speed", 1, "on-target-error", "report"));
        c.executeOk("blockdev-backup", backup);
        guest(p, "write -P 0x15 60M 64k");
        // a failing run may already have met its target error (the rate limit lets a first chunk
        // or two through at once): the job is then gone, which is no test failure
        JsonNode lifted = c.execute("block-job-set-speed", Map.of("device", "j", "speed", 0));
        if (lifted.has("error")) {
            assertThat(failTarget).as("%s: set-speed refused on a run that cannot fail: %s", p.name(), lifted).isTrue();
            // gone (DeviceNotActive), or caught ending: "Job 'j' in state 'aborting' cannot accept
            // command verb 'set-speed'" (a loaded CI saw the second)
            assertThat(lifted.at("/error/class").asText() + ": " + lifted.at("/error/desc").asText())
                    .matches("DeviceNotActive: .*|GenericError: Job 'j' in state '\\w+' cannot accept command verb 'set-speed'");
        }
        JsonNode done = c.waitEvent("BLOCK_JOB_COMPLETED", T).get("data");
        c.waitEvent("JOB_STATUS_CHANGE", e -> e.at("/data/status").asText().equals("null"), T);
        long count = bitmaps(c, "src").get("b0").get("count").asLong();
        c.executeOk("block-export-del", Map.of("id", "guest"));
        c.waitEvent("BLOCK_EXPORT_DELETED", T);
        c.executeOk("blockdev-del", Map.of("node-name", "tgt"));
        c.executeOk("blockdev-del", Map.of("node-name", "src"));
        return new JobEnd(done.get("offset").asLong(), done.get("len").asLong(),
                done.has("error") ? done.get("error").asText() : null, count);
    }

    // ------------------------------------------------------------------ §2 argument errors

    /** incremental.md §2, each refusal in QEMU 7.2's words, the busy one while b0 is frozen. */
    @Test
    void bitmapArgumentErrorsAreQemus() throws Exception {
        onBothPeers(p -> {
            QmpTestClient c = p.qmp();
            Path src = p.dir().resolve("args-src.qcow2");
            newQcow2Node(c, src, "16M", "src");
            for (String t : List.of("t1", "t2")) {
                Path f = p.dir().resolve("args-" + t + ".raw");
                Proc.ok("qemu-img", "create", "-q", "-f", "raw", f.toString(), "16M");
                c.executeOk("blockdev-add", Map.of("driver", "raw", "node-name", t,
                        "file", Map.of("driver", "file", "filename", f.toString())));
            }
            c.executeOk("block-dirty-bitmap-add", Map.of("node", "src", "name", "b0"));
            // b0 gets something to copy, so that a backup of it lasts at speed 1
            c.executeOk("block-export-add", Map.of("type", "nbd", "id", "g", "node-name", "src", "name", "args",
                    "writable", true));
            guest(p, "write -P 0x21 0 64k", "write -P 0x22 4M 64k", "write -P 0x23 8M 64k",
                    "write -P 0x24 12M 64k", "args");
            c.executeOk("block-export-del", Map.of("id", "g"));
            c.waitEvent("BLOCK_EXPORT_DELETED", T);
            Map<List<Object>, String> rows = new LinkedHashMap<>();
            rows.put(List.of("sync", "incremental"), "must provide a valid bitmap name for 'incremental' sync mode");
            rows.put(List.of("sync", "bitmap"), "must provide a valid bitmap name for 'bitmap' sync mode");
            rows.put(List.of("sync", "full", "bitmap-mode", "always"), "Cannot specify bitmap sync mode without a bitmap");
            rows.put(List.of("sync", "bitmap", "bitmap", "nob", "bitmap-mode", "always"),
                    "Bitmap 'nob' could not be found");
            rows.put(List.of("sync", "bitmap", "bitmap", "b0"), "Bitmap sync mode must be given when providing a bitmap");
            rows.put(List.of("sync", "incremental", "bitmap", "b0", "bitmap-mode", "always"),
                    "Bitmap sync mode must be 'on-success' when using sync mode 'incremental'");
            rows.put(List.of("sync", "none", "bitmap", "b0", "bitmap-mode", "on-success"),
                    "sync mode 'none' does not produce meaningful bitmap outputs");
            rows.put(List.of("sync", "full", "bitmap", "b0", "bitmap-mode", "never"),
                    "Bitmap sync mode 'never' has no meaningful effect when combined with sync mode 'full'");
            rows.put(List.of("sync", "top", "bitmap", "b0", "bitmap-mode", "never"),
                    "Bitmap sync mode 'never' has no meaningful effect when combined with sync mode 'top'");
            rows.put(List.of("sync", "bitmap", "bitmap", "b0", "bitmap-mode", "sometimes"),
                    "Parameter 'bitmap-mode' does not accept value 'sometimes'");
            for (Map.Entry<List<Object>, String> row : rows.entrySet()) {
                Map<String, Object> args = new LinkedHashMap<>(Map.of("job-id", "j", "device", "src", "target", "t1"));
                for (int i = 0; i < row.getKey().size(); i += 2) {
                    args.put((String) row.getKey().get(i), row.getKey().get(i + 1));
                }
                assertThat(c.executeError("blockdev-backup", args).get("desc").asText())
                        .as("%s: %s", p.name(), args).isEqualTo(row.getValue());
            }
            // frozen by a running backup: busy for a second one and for every bitmap command
            c.executeOk("blockdev-backup", Map.of("job-id", "j", "device", "src", "target", "t1", "sync", "bitmap",
                    "bitmap", "b0", "bitmap-mode", "never", "speed", 1));
            String busy = "Bitmap 'b0' is currently in use by another operation and cannot be used";
            assertThat(c.executeError("blockdev-backup", Map.of("job-id", "k", "device", "src", "target", "t2",
                    "sync", "bitmap", "bitmap", "b0", "bitmap-mode", "never")).get("desc").asText())
                    .as(p.name()).isEqualTo(busy);
            for (String cmd : List.of("block-dirty-bitmap-clear", "block-dirty-bitmap-remove",
                    "block-dirty-bitmap-enable", "block-dirty-bitmap-disable")) {
                assertThat(c.executeError(cmd, Map.of("node", "src", "name", "b0")).get("desc").asText())
                        .as("%s: %s", p.name(), cmd).isEqualTo(busy);
            }
            assertThat(bitmaps(c, "src").get("b0").get("busy").asBoolean()).as(p.name()).isTrue();
            c.executeOk("block-job-cancel", Map.of("device", "j"));
            c.waitEvent("JOB_STATUS_CHANGE", e -> e.at("/data/status").asText().equals("null"), T);
            assertThat(bitmaps(c, "src").get("b0").get("busy").asBoolean()).as(p.name()).isFalse();
            for (String n : List.of("t1", "t2", "src")) {
                c.executeOk("blockdev-del", Map.of("node-name", n));
            }
        });
    }

    // ------------------------------------------------------------------ §4 libvirt's push sequence

    @Test
    void libvirtPushSequenceBacksUpOnlyWhatChangedAndRestores() throws Exception {
        onBothPeers(p -> {
            QmpTestClient c = p.qmp();
            Path disk = p.dir().resolve("disk.qcow2");
            Path full = p.dir().resolve("full.qcow2");
            Path inc1 = p.dir().resolve("inc1.qcow2");
            Proc.ok("qemu-img", "create", "-q", "-f", "qcow2", disk.toString(), "64M");
            Proc.ok("qemu-io", "-c", "write -P 0x11 0 2M", disk.toString());
            Proc.ok("qemu-img", "create", "-q", "-f", "qcow2", full.toString(), "64M");
            c.executeOk("blockdev-add", Map.of("driver", "qcow2", "node-name", "fmt",
                    "file", Map.of("driver", "file", "filename", disk.toString())));
            c.executeOk("block-export-add", Map.of("type", "nbd", "id", "guest", "node-name", "fmt",
                    "name", "vda", "writable", true));
            // full backup + checkpoint chk-a, atomically
            c.executeOk("blockdev-add", Map.of("driver", "qcow2", "node-name", "full",
                    "file", Map.of("driver", "file", "filename", full.toString())));
            c.executeOk("transaction", Map.of("actions", List.of(
                    action("block-dirty-bitmap-add", Map.of("node", "fmt", "name", "chk-a", "persistent", true)),
                    action("blockdev-backup", Map.of("device", "fmt", "target", "full", "sync", "full",
                            "job-id", "backup-vda")))));
            JsonNode fullDone = c.waitEvent("BLOCK_JOB_COMPLETED", T).get("data");
            assertThat(fullDone.get("len").asLong()).as(p.name()).isEqualTo(64 * MIB);
            c.waitEvent("JOB_STATUS_CHANGE", e -> e.at("/data/status").asText().equals("null"), T);
            c.executeOk("blockdev-del", Map.of("node-name", "full"));
            // the guest writes 1 MiB at 4M and 64 KiB at 20M
            guest(p, "write -P 0x22 4M 1M", "write -P 0x33 20M 64k", "vda");
            assertThat(bitmaps(c, "fmt").get("chk-a").get("count").asLong()).as(p.name()).isEqualTo(1114112);
            // incremental since chk-a + new checkpoint chk-b, atomically, through a disposable copy
            Proc.ok("qemu-img", "create", "-q", "-f", "qcow2", inc1.toString(), "64M");
            c.executeOk("blockdev-add", QmpTestClient.json("{\"driver\":\"qcow2\",\"node-name\":\"inc1\","
                    + "\"file\":{\"driver\":\"file\",\"filename\":\"" + inc1 + "\"},\"backing\":null}"));
            c.executeOk("transaction", Map.of("actions", List.of(
                    action("block-dirty-bitmap-add", Map.of("node", "fmt", "name", "chk-b", "persistent", true)),
                    action("block-dirty-bitmap-add", Map.of("node", "fmt", "name", "backup-vda",
                            "persistent", false, "disabled", true, "granularity", 65536)),
                    action("block-dirty-bitmap-merge", Map.of("node", "fmt", "target", "backup-vda",
                            "bitmaps", List.of(Map.of("node", "fmt", "name", "chk-a")))),
                    action("blockdev-backup", Map.of("device", "fmt", "target", "inc1", "sync", "incremental",
                            "bitmap", "backup-vda", "job-id", "backup-vda")))));
            JsonNode incDone = c.waitEvent("BLOCK_JOB_COMPLETED", T).get("data");
            assertThat(incDone.get("len").asLong()).as(p.name()).isEqualTo(1114112);
            assertThat(incDone.get("offset").asLong()).as(p.name()).isEqualTo(1114112);
            c.waitEvent("JOB_STATUS_CHANGE", e -> e.at("/data/status").asText().equals("null"), T);
            Map<String, JsonNode> bm = bitmaps(c, "fmt");
            assertThat(bm.keySet()).as(p.name()).containsExactly("backup-vda", "chk-b", "chk-a");
            assertThat(bm.get("backup-vda").get("count").asLong()).as(p.name()).isZero();
            assertThat(bm.get("backup-vda").get("recording").asBoolean()).as(p.name()).isFalse();
            assertThat(bm.get("chk-b").get("count").asLong()).as(p.name()).isZero();
            assertThat(bm.get("chk-a").get("count").asLong()).as(p.name()).isEqualTo(1114112);
            assertThat(bm.get("chk-a").get("persistent").asBoolean()).as(p.name()).isTrue();
            c.executeOk("block-dirty-bitmap-remove", Map.of("node", "fmt", "name", "backup-vda"));
            c.executeOk("blockdev-del", Map.of("node-name", "inc1"));
            // the delta holds exactly the changed clusters; on top of the full one it is the disk
            JsonNode map = QmpTestClient.json(Proc.ok("qemu-img", "map", "--output=json", "-U", inc1.toString()));
            List<String> data = new ArrayList<>();
            for (JsonNode e : map) {
                if (e.get("data").asBoolean() && e.get("depth").asInt() == 0) {
                    data.add(e.get("start").asLong() + "+" + e.get("length").asLong());
                }
            }
            assertThat(data).as(p.name()).containsExactly(4 * MIB + "+" + MIB, 20 * MIB + "+" + K64);
            Proc.ok("qemu-img", "rebase", "-u", "-b", full.toString(), "-F", "qcow2", inc1.toString());
            c.executeOk("block-export-del", Map.of("id", "guest"));
            c.waitEvent("BLOCK_EXPORT_DELETED", T);
            c.executeOk("blockdev-del", Map.of("node-name", "fmt"));
            Proc.ok("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", disk.toString(), inc1.toString());
            // both checkpoints were stored at close, enabled ("auto")
            JsonNode info = QmpTestClient.json(Proc.ok("qemu-img", "info", "--output=json", disk.toString()));
            List<String> stored = new ArrayList<>();
            for (JsonNode b : info.at("/format-specific/data/bitmaps")) {
                stored.add(b.get("name").asText() + b.get("flags"));
            }
            assertThat(stored).as(p.name()).containsExactlyInAnyOrder("chk-a[\"auto\"]", "chk-b[\"auto\"]");
            Proc.ok("qemu-img", "check", disk.toString());
        });
    }

    // ------------------------------------------------------------------ a chain under random writes

    /**
     * A full backup and five incrementals, each started in a transaction with its next
     * checkpoint while the guest writes at random over NBD before and during every backup. Each
     * incremental target is a qcow2 whose backing file is the previous target (attached with
     * {@code backing: null}, so it stays a pure delta); the restored point (qemu-img convert of
     * the chain) must equal the disk as it was when its backup started (read over NBD with the
     * guest held).
     */
    @Test
    void aFullAndFiveIncrementalsRestoreEveryPoint() throws Exception {
        onBothPeers(p -> {
            QmpTestClient c = p.qmp();
            SplittableRandom rnd = new SplittableRandom(20261201);
            Path disk = p.dir().resolve("chain-disk.qcow2");
            newQcow2Node(c, disk, "32M", "fmt");
            c.executeOk("block-export-add", Map.of("type", "nbd", "id", "guest", "node-name", "fmt",
                    "name", "vda", "writable", true));
            Path previous = null;
            List<Path> points = new ArrayList<>();
            List<Path> targets = new ArrayList<>();
            for (int k = 0; k <= 5; k++) {
                guest(p, randomWrites(rnd, 12, "vda"));
                // the disk at the backup's start: nothing writes between this copy and the transaction
                Path point = p.dir().resolve("point" + k + ".raw");
                Proc.ok("qemu-img", "convert", "-f", "raw", "-O", "raw", p.nbd("vda"), point.toString());
                points.add(point);
                Path t = p.dir().resolve("chain" + k + ".qcow2");
                targets.add(t);
                List<Object> actions = new ArrayList<>();
                String chk = "chk" + k;
                if (previous == null) {
                    Proc.ok("qemu-img", "create", "-q", "-f", "qcow2", t.toString(), "32M");
                    actions.add(action("block-dirty-bitmap-add", Map.of("node", "fmt", "name", chk)));
                    actions.add(action("blockdev-backup", Map.of("device", "fmt", "target", "t" + k, "sync", "full",
                            "job-id", "b" + k, "speed", 4 * MIB)));
                } else {
                    Proc.ok("qemu-img", "create", "-q", "-f", "qcow2", "-b", previous.toString(), "-F", "qcow2",
                            t.toString());
                    String prevChk = "chk" + (k - 1);
                    actions.add(action("block-dirty-bitmap-add", Map.of("node", "fmt", "name", chk)));
                    actions.add(action("block-dirty-bitmap-add", Map.of("node", "fmt", "name", "tmp",
                            "disabled", true)));
                    actions.add(action("block-dirty-bitmap-merge", Map.of("node", "fmt", "target", "tmp",
                            "bitmaps", List.of(prevChk))));
                    actions.add(action("block-dirty-bitmap-remove", Map.of("node", "fmt", "name", prevChk)));
                    actions.add(action("blockdev-backup", Map.of("device", "fmt", "target", "t" + k,
                            "sync", "incremental", "bitmap", "tmp", "job-id", "b" + k, "speed", 4 * MIB)));
                }
                c.executeOk("blockdev-add", QmpTestClient.json("{\"driver\":\"qcow2\",\"node-name\":\"t" + k
                        + "\",\"file\":{\"driver\":\"file\",\"filename\":\"" + t + "\"},\"backing\":null}"));
                c.executeOk("transaction", Map.of("actions", actions));
                // the guest keeps writing while the job runs
                guest(p, randomWrites(rnd, 8, "vda"));
                c.executeOk("block-job-set-speed", Map.of("device", "b" + k, "speed", 0));
                JsonNode done = c.waitEvent("BLOCK_JOB_COMPLETED", T).get("data");
                assertThat(done.has("error")).as("%s backup %d: %s", p.name(), k, done).isFalse();
                c.waitEvent("JOB_STATUS_CHANGE", e -> e.at("/data/status").asText().equals("null"), T);
                c.executeOk("blockdev-del", Map.of("node-name", "t" + k));
                if (previous != null) {
                    c.executeOk("block-dirty-bitmap-remove", Map.of("node", "fmt", "name", "tmp"));
                }
                previous = t;
            }
            for (int k = 0; k <= 5; k++) {
                Proc.ok("qemu-img", "compare", "-f", "raw", "-F", "qcow2", points.get(k).toString(),
                        targets.get(k).toString());
            }
            c.executeOk("block-export-del", Map.of("id", "guest"));
            c.waitEvent("BLOCK_EXPORT_DELETED", T);
            c.executeOk("blockdev-del", Map.of("node-name", "fmt"));
            Proc.ok("qemu-img", "check", disk.toString());
        });
    }

    /**
     * A guest zero-write is the only change since the checkpoint: the incremental target (a fresh
     * qcow2 over the previous backup, attached with "backing": null as libvirt does) must hide the
     * older data there. Seen in the composition run (seed 20421): jblockd left the clusters
     * unallocated because the target has no L2 table yet and no backing open, so the restored
     * chain showed the full backup's data; QEMU sets the zero flag.
     */
    @Test
    void aZeroWriteReachesTheIncrementalTargetOverItsBackingFile() throws Exception {
        onBothPeers(p -> {
            QmpTestClient c = p.qmp();
            Path disk = p.dir().resolve("zero-disk.qcow2");
            newQcow2Node(c, disk, "4M", "fmt");
            c.executeOk("block-export-add", Map.of("type", "nbd", "id", "guest", "node-name", "fmt",
                    "name", "vda", "writable", true));
            guest(p, "write -P 0x5a 0 2M", "vda");
            Path full = p.dir().resolve("zero-full.qcow2");
            Path inc = p.dir().resolve("zero-inc.qcow2");
            Proc.ok("qemu-img", "create", "-q", "-f", "qcow2", full.toString(), "4M");
            backupInto(c, "t0", full, List.of(action("block-dirty-bitmap-add", Map.of("node", "fmt", "name", "chk")),
                    action("blockdev-backup", Map.of("device", "fmt", "target", "t0", "sync", "full", "job-id", "b0"))));
            guest(p, "write -z 131072 720896", "vda");
            Path point = p.dir().resolve("zero-point.raw");
            Proc.ok("qemu-img", "convert", "-f", "raw", "-O", "raw", p.nbd("vda"), point.toString());
            Proc.ok("qemu-img", "create", "-q", "-f", "qcow2", "-b", full.toString(), "-F", "qcow2", inc.toString());
            backupInto(c, "t1", inc, List.of(action("blockdev-backup", Map.of("device", "fmt", "target", "t1",
                    "sync", "incremental", "bitmap", "chk", "job-id", "b1"))));
            Proc.ok("qemu-img", "compare", "-f", "raw", "-F", "qcow2", point.toString(), inc.toString());
            Proc.ok("qemu-img", "check", inc.toString());
            c.executeOk("block-export-del", Map.of("id", "guest"));
            c.waitEvent("BLOCK_EXPORT_DELETED", T);
            c.executeOk("blockdev-del", Map.of("node-name", "fmt"));
        });
    }

    /** Attaches {@code target} as node {@code node} without its backing, runs the transaction's backup to its end. */
    private static void backupInto(QmpTestClient c, String node, Path target, List<Object> actions) throws Exception {
        c.executeOk("blockdev-add", QmpTestClient.json("{\"driver\":\"qcow2\",\"node-name\":\"" + node
                + "\",\"file\":{\"driver\":\"file\",\"filename\":\"" + target + "\"},\"backing\":null}"));
        c.executeOk("transaction", Map.of("actions", actions));
        JsonNode done = c.waitEvent("BLOCK_JOB_COMPLETED", T).get("data");
        assertThat(done.has("error")).as("%s", done).isFalse();
        c.waitEvent("JOB_STATUS_CHANGE", e -> e.at("/data/status").asText().equals("null"), T);
        c.executeOk("blockdev-del", Map.of("node-name", node));
    }

    // ------------------------------------------------------------------ interop both ways

    /**
     * One disk, checkpoints handed between the daemons through the image: jblockd takes the
     * full backup with checkpoint chk0 and closes the disk; qemu-storage-daemon opens it, backs
     * up incrementally from the bitmap jblockd stored, with checkpoint chk1, and closes it;
     * jblockd backs up from the bitmap QEMU stored. Each incremental copies exactly what the
     * guest wrote since the checkpoint, each restored point equals the disk at its backup, and
     * the image passes {@code qemu-img check} after every step.
     */
    @Test
    void checkpointsPassBetweenJblockdAndQemuThroughTheImage() throws Exception {
        assumeTrue(Proc.present("qemu-img") && Proc.present("qemu-io") && Proc.present("qemu-storage-daemon"));
        Path disk = dir.resolve("shared-disk.qcow2");
        Proc.ok("qemu-img", "create", "-q", "-f", "qcow2", disk.toString(), "32M");
        Proc.ok("qemu-io", "-c", "write -P 0x11 0 8M", disk.toString());
        List<Path> points = new ArrayList<>();
        List<Path> targets = new ArrayList<>();
        try (NbdPeer j = NbdPeer.jblockd(dir)) {
            checkpointStep(j, disk, null, 0, "chk0", points, targets, "write -P 0x22 1M 64k", "write -P 0x23 9M 1M");
        }
        Proc.ok("qemu-img", "check", disk.toString());
        try (NbdPeer q = NbdPeer.qsd(dir)) {
            checkpointStep(q, disk, "chk0", MIB + K64, "chk1", points, targets, "write -P 0x33 2M 128k", "write -P 0x34 30M 64k");
        }
        Proc.ok("qemu-img", "check", disk.toString());
        try (NbdPeer j = NbdPeer.jblockd(dir)) {
            checkpointStep(j, disk, "chk1", 3 * K64, "chk2", points, targets, "vda");
        }
        Proc.ok("qemu-img", "check", disk.toString());
        for (int k = 0; k < points.size(); k++) {
            Proc.ok("qemu-img", "compare", "-f", "raw", "-F", "qcow2", points.get(k).toString(),
                    targets.get(k).toString());
        }
    }

    /**
     * On {@code p}: opens {@code disk}, checks that the incremental from {@code fromChk} (a full
     * backup when null), whose count must be {@code fromCount}, copies what the previous step's guest wrote, backs up with the new
     * persistent checkpoint {@code newChk} (fromChk removed), then lets the guest write
     * {@code afterwards} and closes the disk, which stores the bitmaps.
     */
    private void checkpointStep(NbdPeer p, Path disk, String fromChk, long fromCount, String newChk, List<Path> points, List<Path> targets,
                                String... afterwards) throws Exception {
        QmpTestClient c = p.qmp();
        int k = targets.size();
        c.executeOk("blockdev-add", Map.of("driver", "qcow2", "node-name", "fmt",
                "file", Map.of("driver", "file", "filename", disk.toString())));
        c.executeOk("block-export-add", Map.of("type", "nbd", "id", "guest", "node-name", "fmt",
                "name", "vda", "writable", true));
        Path point = p.dir().resolve("xpoint" + k + ".raw");
        Proc.ok("qemu-img", "convert", "-f", "raw", "-O", "raw", p.nbd("vda"), point.toString());
        points.add(point);
        Path t = p.dir().resolve("xchain" + k + ".qcow2");
        targets.add(t);
        List<Object> actions = new ArrayList<>();
        actions.add(action("block-dirty-bitmap-add", Map.of("node", "fmt", "name", newChk, "persistent", true)));
        long expected;
        if (fromChk == null) {
            Proc.ok("qemu-img", "create", "-q", "-f", "qcow2", t.toString(), "32M");
            actions.add(action("blockdev-backup", Map.of("device", "fmt", "target", "t", "sync", "full",
                    "job-id", "b")));
            expected = 32 * MIB;
        } else {
            JsonNode from = bitmaps(c, "fmt").get(fromChk);
            assertThat(from).as("%s: %s loaded from the image", p.name(), fromChk).isNotNull();
            assertThat(from.get("persistent").asBoolean()).isTrue();
            assertThat(from.get("recording").asBoolean()).isTrue();
            expected = from.get("count").asLong();
            assertThat(expected).as("%s: %s's count", p.name(), fromChk).isEqualTo(fromCount);
            Proc.ok("qemu-img", "create", "-q", "-f", "qcow2", "-b", targets.get(k - 1).toString(), "-F", "qcow2",
                    t.toString());
            actions.add(action("blockdev-backup", Map.of("device", "fmt", "target", "t", "sync", "incremental",
                    "bitmap", fromChk, "job-id", "b")));
        }
        c.executeOk("blockdev-add", QmpTestClient.json("{\"driver\":\"qcow2\",\"node-name\":\"t\","
                + "\"file\":{\"driver\":\"file\",\"filename\":\"" + t + "\"},\"backing\":null}"));
        c.executeOk("transaction", Map.of("actions", actions));
        JsonNode done = c.waitEvent("BLOCK_JOB_COMPLETED", T).get("data");
        assertThat(done.has("error")).as("%s: %s", p.name(), done).isFalse();
        assertThat(done.get("len").asLong()).as("%s: bytes copied from %s", p.name(), fromChk).isEqualTo(expected);
        c.waitEvent("JOB_STATUS_CHANGE", e -> e.at("/data/status").asText().equals("null"), T);
        c.executeOk("blockdev-del", Map.of("node-name", "t"));
        if (fromChk != null) {
            c.executeOk("block-dirty-bitmap-remove", Map.of("node", "fmt", "name", fromChk));
        }
        if (afterwards.length > 0 && afterwards[0].contains(" ")) {
            String[] cmds = Arrays.copyOf(afterwards, afterwards.length + 1);
            cmds[afterwards.length] = "vda";
            guest(p, cmds);
        }
        c.executeOk("block-export-del", Map.of("id", "guest"));
        c.waitEvent("BLOCK_EXPORT_DELETED", T);
        c.executeOk("blockdev-del", Map.of("node-name", "fmt"));
    }

    /** {@code n} qemu-io writes of 4 KiB .. 256 KiB at random 4 KiB-aligned offsets of 32 MiB, then the export name. */
    private static String[] randomWrites(SplittableRandom rnd, int n, String export) {
        String[] cmds = new String[n + 1];
        for (int i = 0; i < n; i++) {
            long len = 4096L << rnd.nextInt(7);
            long off = rnd.nextLong(0, (32 * MIB - len) / 4096 + 1) * 4096;
            cmds[i] = "write -P 0x" + Integer.toHexString(0x40 + rnd.nextInt(0x80)) + " " + off + " " + len;
        }
        cmds[n] = export;
        return cmds;
    }

    // ------------------------------------------------------------------ helpers

    private static Map<String, Object> action(String type, Map<String, ?> data) {
        return Map.of("type", type, "data", data);
    }

    /**
     * The guest: one qemu-io over NBD running {@code cmds} in order; the last element may name
     * the export (default {@code src}).
     */
    private static void guest(NbdPeer p, String... cmds) throws IOException, InterruptedException {
        String export = "src";
        List<String> argv = new ArrayList<>(List.of("qemu-io", "-f", "raw"));
        for (String s : cmds) {
            if (s.contains(" ")) {
                argv.add("-c");
                argv.add(s);
            } else {
                export = s;
            }
        }
        argv.add(p.nbd(export));
        String out = Proc.ok(argv.toArray(String[]::new));
        assertThat(out).as("qemu-io %s", argv).doesNotContain("failed");
    }

    /** The node's dirty-bitmaps by name, in QEMU's list order (unnamed ones left out). */
    private static Map<String, JsonNode> bitmaps(QmpTestClient c, String node) throws IOException {
        Map<String, JsonNode> out = new LinkedHashMap<>();
        for (JsonNode n : c.executeOk("query-named-block-nodes", Map.of("flat", true))) {
            if (n.get("node-name").asText().equals(node)) {
                for (JsonNode b : n.path("dirty-bitmaps")) {
                    if (b.has("name")) {
                        out.put(b.get("name").asText(), b);
                    }
                }
            }
        }
        return out;
    }

    /** A new empty qcow2 image of {@code size}, added as node {@code node} over a file node. */
    private static void newQcow2Node(QmpTestClient c, Path image, String size, String node) throws Exception {
        Proc.ok("qemu-img", "create", "-q", "-f", "qcow2", image.toString(), size);
        c.executeOk("blockdev-add", Map.of("driver", "qcow2", "node-name", node,
                "file", Map.of("driver", "file", "filename", image.toString())));
    }
}
