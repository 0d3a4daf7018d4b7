package jblockd.job.mirror;

import static jblockd.testsupport.QmpTestClient.json;
import static org.assertj.core.api.Assertions.assertThat;

import java.io.RandomAccessFile;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.NbdPeer;

/**
 * {@code copy-mode=write-blocking} (Incus sends it on every mirror) on jblockd and on
 * qemu-storage-daemon 7.2 side by side: a guest write over NBD is on the target when it
 * completes, though the background copy (held at speed 1) has not got there; the job's offset
 * and len both grow by the write; a failing target write does not fail the guest's write but is
 * the job's error by its on-target-error.
 */
class MirrorWriteBlockingQemuIT {
    private static final Duration T = Duration.ofSeconds(30);
    private static final int MIB = 1 << 20;

    @TempDir
    Path dir;

    @BeforeEach
    void tools() {
        ExternalTools.assumeTools("qemu-storage-daemon", "qemu-img", "qemu-io");
    }

    private static void image(Path p, int fill) throws Exception {
        try (RandomAccessFile f = new RandomAccessFile(p.toFile(), "rw")) {
            f.setLength(64L * MIB);
            if (fill != 0) {
                byte[] b = new byte[MIB];
                java.util.Arrays.fill(b, (byte) fill);
                for (int i = 0; i < 64; i++) {
                    f.write(b);
                }
            }
        }
    }

    /** What a peer showed: the guest's write on the target, and offset/len before and after. */
    record Seen(boolean guestWriteOnTarget, long offsetGrowth, long lenGrowth, List<String> endEvents) {
    }

    private Seen writeDuringMirror(NbdPeer peer) throws Exception {
        Path src = peer.dir().resolve("src.raw");
        Path tgt = peer.dir().resolve("tgt.raw");
        image(src, 0x11);
        image(tgt, 0);
        var q = peer.qmp();
        q.executeOk("blockdev-add", json("{\"driver\":\"raw\",\"node-name\":\"src\",\"file\":{\"driver\":\"file\",\"filename\":\"" + src + "\"}}"));
        q.executeOk("blockdev-add", json("{\"driver\":\"raw\",\"node-name\":\"tgt\",\"file\":{\"driver\":\"file\",\"filename\":\"" + tgt + "\"}}"));
        q.executeOk("block-export-add", json("{\"type\":\"nbd\",\"id\":\"g\",\"node-name\":\"src\",\"name\":\"vda\",\"writable\":true}"));
        q.executeOk("blockdev-mirror", json("{\"job-id\":\"m\",\"device\":\"src\",\"target\":\"tgt\",\"sync\":\"full\","
                + "\"speed\":1,\"copy-mode\":\"write-blocking\"}"));
        // the rate limit lets the first chunk(s) through, then nothing for a very long time:
        // wait until the background has stopped moving
        JsonNode before = settledJob(q);
        ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 0x5a 40M 1M", peer.nbd("vda"));
        JsonNode after = job(q);
        // read from the file itself: QEMU's mirror holds the target's "consistent read" lock, so
        // not even qemu-io -U may open it while the job runs (the page cache is the same)
        boolean onTarget = holds(tgt, 40L * MIB, MIB, (byte) 0x5a);
        q.executeOk("block-job-cancel", json("{\"device\":\"m\",\"force\":true}"));
        List<String> end = new ArrayList<>();
        JsonNode e = q.waitEvent("BLOCK_JOB_CANCELLED", T);
        end.add(e.get("event").asText());
        return new Seen(onTarget, after.get("offset").asLong() - before.get("offset").asLong(),
                after.get("len").asLong() - before.get("len").asLong(), end);
    }

    private static boolean holds(Path file, long offset, int len, byte value) throws Exception {
        byte[] b = new byte[len];
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "r")) {
            f.seek(offset);
            f.readFully(b);
        }
        for (byte x : b) {
            if (x != value) {
                return false;
            }
        }
        return true;
    }

    private static JsonNode job(jblockd.testsupport.QmpTestClient q) throws Exception {
        return q.executeOk("query-block-jobs").get(0);
    }

    private static JsonNode settledJob(jblockd.testsupport.QmpTestClient q) throws Exception {
        JsonNode prev = job(q);
        while (true) {
            // not a sleep for synchronisation: a query that sees the same progress twice in a
            // row, 200 ms apart, means the rate limit holds the copy (speed 1 B/s)
            Thread.sleep(200);
            JsonNode now = job(q);
            if (now.get("offset").equals(prev.get("offset")) && now.get("len").equals(prev.get("len"))) {
                return now;
            }
            prev = now;
        }
    }

    @Test
    void aGuestWriteIsOnTheTargetWhenItCompletesAndCountsInOffsetAndLen() throws Exception {
        NbdPeer.Both<Seen> seen = NbdPeer.qemuThenJblockd(dir, this::writeDuringMirror);
        assertThat(seen.qemu().guestWriteOnTarget()).as("QEMU: the write on the target").isTrue();
        assertThat(seen.jblockd()).isEqualTo(seen.qemu());
        assertThat(seen.jblockd().offsetGrowth()).isEqualTo(MIB);
        assertThat(seen.jblockd().lenGrowth()).isEqualTo(MIB);
    }

    /** A target that fails writes from sector 81920 (40 MiB) on: the guest's write still succeeds. */
    private List<String> failingTarget(NbdPeer peer) throws Exception {
        Path src = peer.dir().resolve("src.raw");
        Path tgt = peer.dir().resolve("tgt.raw");
        image(src, 0x11);
        image(tgt, 0);
        var q = peer.qmp();
        q.executeOk("blockdev-add", json("{\"driver\":\"raw\",\"node-name\":\"src\",\"file\":{\"driver\":\"file\",\"filename\":\"" + src + "\"}}"));
        q.executeOk("blockdev-add", json("{\"driver\":\"raw\",\"node-name\":\"tgt\",\"file\":{\"driver\":\"blkdebug\","
                + "\"inject-error\":[{\"event\":\"write_aio\",\"errno\":5,\"sector\":81920,\"once\":false}],"
                + "\"image\":{\"driver\":\"file\",\"filename\":\"" + tgt + "\"}}}"));
        q.executeOk("block-export-add", json("{\"type\":\"nbd\",\"id\":\"g\",\"node-name\":\"src\",\"name\":\"vda\",\"writable\":true}"));
        q.executeOk("blockdev-mirror", json("{\"job-id\":\"m\",\"device\":\"src\",\"target\":\"tgt\",\"sync\":\"full\","
                + "\"speed\":1,\"copy-mode\":\"write-blocking\",\"on-target-error\":\"report\"}"));
        settledJob(q);
        String io = ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 0x5a 40M 64k", peer.nbd("vda"));
        List<String> seen = new ArrayList<>();
        seen.add(io.contains("wrote 65536/65536") ? "guest write ok" : "guest write failed: " + io);
        JsonNode err = q.waitEvent("BLOCK_JOB_ERROR", T);
        seen.add("BLOCK_JOB_ERROR " + err.get("data").get("operation").asText() + " " + err.get("data").get("action").asText());
        // the job ends at its next iteration; the rate limit's sleep is cut short by a cancel in
        // QEMU, so end it that way on both and look at the error it ended with
        q.execute("block-job-cancel", json("{\"device\":\"m\",\"force\":true}"));
        q.waitEvent("JOB_STATUS_CHANGE", e -> e.get("data").get("status").asText().equals("concluded"), T);
        for (JsonNode e : q.drainEvents()) {
            String name = e.get("event").asText();
            if (name.equals("BLOCK_JOB_COMPLETED") || name.equals("BLOCK_JOB_CANCELLED")) {
                seen.add(name + " error=" + (e.get("data").has("error") ? e.get("data").get("error").asText() : "none"));
            }
        }
        return seen;
    }

    @Test
    void aFailedTargetWriteIsTheJobsErrorNotTheGuests() throws Exception {
        NbdPeer.Both<List<String>> seen = NbdPeer.qemuThenJblockd(dir, this::failingTarget);
        assertThat(seen.qemu().get(0)).isEqualTo("guest write ok");
        assertThat(seen.jblockd()).isEqualTo(seen.qemu());
    }
}
