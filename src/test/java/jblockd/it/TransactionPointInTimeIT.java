package jblockd.it;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.QmpTestClient;

/**
 * Two devices backed up by one {@code transaction} while a guest writes both over NBD: the two
 * backups share one point in time. The guest writes in lock-step, stamp n to disk A and, once
 * that is acknowledged, stamp n to disk B (a guest whose writes depend on each other, as a
 * journal and its data do). Each target must equal its disk as it was after exactly the writes
 * up to some stamp (byte for byte), and the two stamps must be one point of that sequence:
 * target A holds writes 1..a, target B writes 1..b with b = a or a - 1. Backups taken at two
 * different moments would give a b far from a; a filter put in place after a guest write went
 * on would give a target matching no prefix at all.
 */
class TransactionPointInTimeIT {
    private static final int BLOCK = 64 * 1024;
    private static final int SIZE = 16 << 20;
    private static final int BLOCKS = SIZE / BLOCK;

    @TempDir
    Path dir;

    /** One acknowledged guest write. */
    private record Write(int disk, long stamp, int block) {
    }

    private static byte[] payload(int disk, long stamp, int block) {
        byte[] b = new byte[BLOCK];
        Arrays.fill(b, (byte) (stamp * 31 + block * 7 + disk + 1));
        ByteBuffer.wrap(b).putLong(0, stamp).putInt(8, block).putInt(12, disk);
        return b;
    }

    @Test
    void twoBackupsOfOneTransactionShareOnePointInTimeUnderLiveGuestWrites() throws Exception {
        ExternalTools.assumeTools("qemu-img");
        List<String> args = new ArrayList<>();
        for (int i = 0; i < 2; i++) {
            Path img = dir.resolve("disk" + i + ".raw");
            ExternalTools.ok("qemu-img", "create", "-q", "-f", "raw", img.toString(), String.valueOf(SIZE));
            args.addAll(List.of("--drive", "id=drive" + i + ",file=" + img + ",format=raw"));
        }
        Path nbd = dir.resolve("nbd.sock");
        args.addAll(List.of("--nbd-server", "addr.type=unix,addr.path=" + nbd,
                "--export", "type=nbd,id=exp0,device=drive0,name=d0,writable=on",
                "--export", "type=nbd,id=exp1,device=drive1,name=d1,writable=on"));
        List<Write> log = new ArrayList<>();
        AtomicLong stamps = new AtomicLong();
        AtomicReference<Throwable> guestFailure = new AtomicReference<>();
        try (DaemonProcess daemon = DaemonProcess.start(dir, args.toArray(String[]::new));
             QmpTestClient c = daemon.connect();
             RawNbdClient a = new RawNbdClient(nbd, "d0");
             RawNbdClient b = new RawNbdClient(nbd, "d1")) {
            RawNbdClient[] disks = {a, b};
            java.util.concurrent.atomic.AtomicBoolean stop = new java.util.concurrent.atomic.AtomicBoolean();
            Thread guest = Thread.ofPlatform().name("guest").start(() -> {
                SplittableRandom r = new SplittableRandom(13);
                try {
                    for (long n = 1; !stop.get(); n++) {
                        for (int d = 0; d < 2; d++) {
                            int block = r.nextInt(BLOCKS);
                            disks[d].write((long) block * BLOCK, payload(d, n, block), false);
                            synchronized (log) {
                                log.add(new Write(d, n, block));
                            }
                        }
                        stamps.set(n);
                    }
                } catch (Throwable t) {
                    guestFailure.set(t);
                }
            });
            waitFor(() -> stamps.get() >= 300 || guestFailure.get() != null);

            // slow backups (4 MiB/s for 16 MiB each) so that most guest writes go through the
            // copy-before-write filters while they run
            List<Object> actions = new ArrayList<>();
            for (int i = 0; i < 2; i++) {
                actions.add(Map.of("type", "drive-backup", "data", Map.of("job-id", "job" + i, "device", "drive" + i,
                        "target", dir.resolve("backup" + i + ".raw").toString(), "sync", "full",
                        "speed", 4 << 20)));
            }
            JsonNode reply = c.execute("transaction", Map.of("actions", actions));
            long atReply = stamps.get();
            assertThat(reply.has("return")).as(reply.toString()).isTrue();
            for (int i = 0; i < 2; i++) {
                String id = "job" + i;
                JsonNode done = c.waitEvent("BLOCK_JOB_COMPLETED", e -> e.at("/data/device").asText().equals(id),
                        Duration.ofSeconds(60));
                assertThat(done.at("/data/error").isMissingNode()).as(done.toString()).isTrue();
            }
            long atEnd = stamps.get();
            stop.set(true);
            guest.join(20_000);
            assertThat(guestFailure.get()).isNull();
            assertThat(atEnd - atReply).as("guest writes while the backups ran").isGreaterThan(50);

            List<Write> writes;
            synchronized (log) {
                writes = List.copyOf(log);
            }
            long pointA = checkPrefix(0, writes);
            long pointB = checkPrefix(1, writes);
            // stamps counts round n only after both disks' writes of it returned: disk 0's write n
            // may be before the point in time while the reply still reads stamps as n - 1
            assertThat(pointA).as("writes in backup A").isGreaterThanOrEqualTo(300).isLessThanOrEqualTo(atReply + 1);
            assertThat(pointB).as("backup B against backup A's point in time").isBetween(pointA - 1, pointA);
        }
    }

    /**
     * Finds the stamp of the newest write in {@code disk}'s backup and checks that the backup
     * equals the disk after exactly the writes up to it. Returns that stamp.
     */
    private long checkPrefix(int disk, List<Write> writes) throws Exception {
        byte[] backup = Files.readAllBytes(dir.resolve("backup" + disk + ".raw"));
        assertThat(backup).hasSize(SIZE);
        long point = 0;
        for (int blk = 0; blk < BLOCKS; blk++) {
            point = Math.max(point, ByteBuffer.wrap(backup, blk * BLOCK, BLOCK).getLong());
        }
        byte[] model = new byte[SIZE];
        for (Write w : writes) {
            if (w.disk() == disk && w.stamp() <= point) {
                System.arraycopy(payload(disk, w.stamp(), w.block()), 0, model, w.block() * BLOCK, BLOCK);
            }
        }
        assertThat(Arrays.mismatch(backup, model))
                .as("first byte where backup %d differs from its disk after writes 1..%d", disk, point)
                .isEqualTo(-1);
        return point;
    }

    /** Bounded wait on a condition another thread makes true (polled, no fixed sleep). */
    private static void waitFor(java.util.function.BooleanSupplier cond) throws InterruptedException {
        long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
        while (!cond.getAsBoolean()) {
            assertThat(System.nanoTime()).as("condition within 30 s").isLessThan(deadline);
            Thread.sleep(5);
        }
    }
}
