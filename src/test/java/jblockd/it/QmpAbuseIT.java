package jblockd.it;

import static jblockd.it.Peers.run;
import static org.assertj.core.api.Assertions.assertThat;

import java.io.InputStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import com.fasterxml.jackson.databind.JsonNode;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/**
 * One QMP connection sends 5,000 garbled messages (bad JSON, stray closers, non-objects,
 * unknown commands, wrong argument types, invalid UTF-8, over-long strings) while a backup runs
 * and a guest reads and writes over NBD. The backup completes with the point-in-time copy,
 * guest throughput stays within reach of what it was without the abuse, two other QMP clients
 * each receive the same complete event stream, and the abusive connection itself still answers
 * a valid command at the end (SPEC §3).
 */
class QmpAbuseIT {
    private static final Duration T = Duration.ofSeconds(40);
    private static final int MIB = 1 << 20;
    private static final int MESSAGES = 5000;

    @TempDir
    Path dir;

    private static final String[] GARBAGE = {
        "}", "]", "{\"execute\": 1}", "[1, 2, 3]", "42", "\"just a string\"", "nonsense-word",
        "{\"execute\": \"no-such-command\"}", "{\"execute\": \"query-block\", \"arguments\": {\"x\": 1}}",
        "{\"execute\": \"drive-backup\", \"arguments\": {\"device\": 5, \"target\": []}}",
        "{\"execute\": \"block-job-cancel\", \"arguments\": {\"device\": \"nope\"}}",
        "{\"arguments\": {}}", "{\"execute\": \"query-status\", \"id\": {\"nested\": [1]}, \"extra\": true}",
        "{'execute': 'block-job-set-speed', 'arguments': {'device': 'drive0', 'speed': 'fast'}}",
        "{\"execute\": \"nbd-server-stop\", \"arguments\": null}", "{\"execute\": \"\\u0000\"}",
    };

    /** Reads and counts everything the server sends back on the abusive connection. */
    private static Thread drain(InputStream in, AtomicLong bytes, StringBuilder tail) {
        return Thread.ofPlatform().name("abuse-drain").start(() -> {
            byte[] b = new byte[65536];
            try {
                int n;
                while ((n = in.read(b)) > 0) {
                    bytes.addAndGet(n);
                    synchronized (tail) {
                        tail.append(new String(b, 0, n, StandardCharsets.UTF_8));
                        if (tail.length() > 8192) {
                            tail.delete(0, tail.length() - 4096);
                        }
                    }
                }
            } catch (Exception ignored) {
                // closed
            }
        });
    }

    @Test
    void garbageOnOneConnectionDisturbsNoJobNoGuestNoOtherClient() throws Exception {
        Peers.assumeTools("qemu-img", "qemu-io");
        Path src = dir.resolve("src.raw");
        Path pre = dir.resolve("pre.raw");
        Path tgt = dir.resolve("tgt.raw");
        Path nbd = dir.resolve("nbd.sock");
        run("qemu-img", "create", "-q", "-f", "raw", src.toString(), "8M");
        run("qemu-io", "-f", "raw", "-c", "write -P 0x11 0 8M", src.toString());
        run("cp", src.toString(), pre.toString());
        try (DaemonProcess d = DaemonProcess.start(dir, "--drive", "id=drive0,file=" + src + ",format=raw",
                "--nbd-server", "addr.type=unix,addr.path=" + nbd,
                "--export", "type=nbd,id=exp0,device=drive0,name=disk,writable=on");
             QmpTestClient c = d.connect(); QmpTestClient l1 = d.connect(); QmpTestClient l2 = d.connect();
             RawNbdClient guest = new RawNbdClient(nbd, "disk");
             SocketChannel abuse = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            c.executeOk("drive-backup", Map.of("device", "drive0", "target", tgt.toString(), "sync", "full",
                    "format", "raw", "speed", MIB));
            // the guest overwrites the first half (copy-before-write) while the job crawls
            byte[] w = new byte[65536];
            java.util.Arrays.fill(w, (byte) 0x22);
            for (long off = 0; off < 4L * MIB; off += w.length) {
                guest.write(off, w, false);
            }
            guest.flush();
            double quiet = readThroughputChecked(guest, 800);

            abuse.connect(UnixDomainSocketAddress.of(d.qmpSocket()));
            AtomicLong got = new AtomicLong();
            StringBuilder tail = new StringBuilder();
            Thread drainer = drain(Channels.newInputStream(abuse), got, tail);
            var out = Channels.newOutputStream(abuse);
            out.write("{\"execute\":\"qmp_capabilities\"}".getBytes(StandardCharsets.UTF_8));
            AtomicBoolean sending = new AtomicBoolean(true);
            Thread sender = Thread.ofPlatform().name("abuser").start(() -> {
                try {
                    String big = "x".repeat(4096);
                    for (int i = 0; i < MESSAGES; i++) {
                        byte[] m = switch (i % 20) {
                            case 17 -> new byte[] {(byte) 0xff, (byte) 0xfe, '\n'};
                            case 18 -> ("{\"execute\": \"" + big + "\"}").getBytes(StandardCharsets.UTF_8);
                            case 19 -> "\"\\ud800\" ".getBytes(StandardCharsets.UTF_8);
                            default -> (GARBAGE[i % GARBAGE.length] + "\n").getBytes(StandardCharsets.UTF_8);
                        };
                        out.write(m);
                    }
                    out.write("{\"execute\":\"query-status\",\"id\":\"last\"}\n".getBytes(StandardCharsets.UTF_8));
                    out.flush();
                } catch (Exception e) {
                    throw new RuntimeException(e);
                } finally {
                    sending.set(false);
                }
            });
            // the guest's reads while the garbage flows
            List<Double> busy = new ArrayList<>();
            while (sending.get() || busy.isEmpty()) {
                busy.add(readThroughputChecked(guest, 400));
            }
            sender.join(T.toMillis());
            assertThat(sender.isAlive()).isFalse();
            // the abusive connection is still served: its final valid command gets its reply
            long deadline = System.nanoTime() + T.toNanos();
            while (!tailHas(tail, "\"last\"") && System.nanoTime() < deadline) {
                Thread.sleep(20);
            }
            assertThat(tailHas(tail, "\"id\": \"last\"") || tailHas(tail, "\"id\":\"last\""))
                    .as("reply to the final valid command; tail: %s", tail).isTrue();
            // every garbled message earned its own error reply (about 100 bytes each)
            assertThat(got.get()).as("bytes of replies to the garbage").isGreaterThan(MESSAGES * 40L);
            assertThat(c.executeOk("query-block-jobs")).as("the backup was running throughout").hasSize(1);
            double during = busy.stream().mapToDouble(Double::doubleValue).average().orElseThrow();
            System.out.printf("QmpAbuseIT: guest reads %.1f MiB/s quiet, %.1f MiB/s under %d garbled messages%n",
                    quiet, during, MESSAGES);
            // generous on a loaded 2-core machine: a stall would be ~0
            assertThat(during).as("guest throughput under QMP abuse (quiet: %.1f MiB/s)", quiet)
                    .isGreaterThan(quiet * 0.2);

            c.executeOk("block-job-set-speed", Map.of("device", "drive0", "speed", 0));
            JsonNode done1 = l1.waitEvent("BLOCK_JOB_COMPLETED", T);
            JsonNode done2 = l2.waitEvent("BLOCK_JOB_COMPLETED", T);
            assertThat(done1.get("data").has("error")).isFalse();
            assertThat(done2).isEqualTo(done1);
            c.waitEvent("BLOCK_JOB_COMPLETED", T);
            // the job's life ends with JOB_STATUS_CHANGE(null), after the completion event (the
            // wait takes that one event out of each queue, the others stay in order)
            for (QmpTestClient l : List.of(l1, l2)) {
                l.waitEvent("JOB_STATUS_CHANGE", e -> e.at("/data/status").asText().equals("null"), T);
            }
            run("qemu-img", "compare", "-U", "-f", "raw", "-F", "raw", pre.toString(), tgt.toString());
            // both listeners saw the same, complete lifecycle (no event lost to the abuse)
            List<String> s1 = statuses(l1);
            assertThat(s1).containsSubsequence("created", "running", "pending", "concluded");
            assertThat(statuses(l2)).isEqualTo(s1);
            abuse.shutdownOutput(); // the server sees EOF and hangs up, ending the drainer
            drainer.join(5000);
            assertThat(d.isAlive()).isTrue();
            assertThat(c.executeOk("query-status").get("status").asText()).isEqualTo("running");
        }
    }

    /** MiB/s of 64 KiB guest reads cycling over the disk, each block's content checked, for {@code ms}. */
    private static double readThroughputChecked(RawNbdClient g, long ms) throws Exception {
        long end = System.nanoTime() + ms * 1_000_000;
        long bytes = 0;
        long t0 = System.nanoTime();
        for (long off = 0; System.nanoTime() < end; off = (off + 65536) % (8L * MIB)) {
            byte[] b = g.read(off, 65536);
            assertThat(b[0]).isEqualTo(off < 4L * MIB ? (byte) 0x22 : (byte) 0x11);
            bytes += b.length;
        }
        return bytes / (double) MIB / ((System.nanoTime() - t0) / 1e9);
    }

    private static boolean tailHas(StringBuilder tail, String s) {
        synchronized (tail) {
            return tail.indexOf(s) >= 0;
        }
    }

    /** The JOB_STATUS_CHANGE statuses a listener saw, in order. */
    private static List<String> statuses(QmpTestClient l) {
        List<String> s = new ArrayList<>();
        for (JsonNode e : l.drainEvents()) {
            if (e.get("event").asText().equals("JOB_STATUS_CHANGE")) {
                s.add(e.at("/data/status").asText());
            }
        }
        return s;
    }

    /**
     * An over-long message (16 MiB, far past the 1 MiB bound) and a message nested 100,000 deep
     * each earn one error and are skipped without buffering them; the same connection then gets
     * the reply to a valid command, and another client is never held up.
     */
    @Test
    void overLongAndOverDeepMessagesAreSkippedWithOneError() throws Exception {
        try (DaemonProcess d = DaemonProcess.start(dir); QmpTestClient c = d.connect();
             QmpTestClient other = d.connect()) {
            byte[] chunk = "x".repeat(1 << 20).getBytes(StandardCharsets.UTF_8);
            Thread sender = Thread.ofPlatform().start(() -> {
                try {
                    c.sendRaw("{\"execute\": \"query-status\", \"arguments\": {\"s\": \"");
                    for (int i = 0; i < 16; i++) {
                        c.sendRaw(chunk);
                    }
                    c.sendRaw("\"}}\n");
                    c.sendRaw("[".repeat(100_000) + "]".repeat(100_000) + "\n");
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            // another client is served while the big message streams in
            for (int i = 0; i < 20; i++) {
                assertThat(other.executeOk("query-status").get("status").asText()).isEqualTo("running");
            }
            sender.join(T.toMillis());
            JsonNode tooLong = c.nextReply();
            assertThat(tooLong.at("/error/class").asText()).isEqualTo("GenericError");
            JsonNode tooDeep = c.nextReply();
            assertThat(tooDeep.at("/error/class").asText()).isEqualTo("GenericError");
            JsonNode ok = c.executeWithId("query-status", null, "after");
            assertThat(ok.get("id").asText()).isEqualTo("after");
            assertThat(ok.at("/return/status").asText()).isEqualTo("running");
        }
    }
}
