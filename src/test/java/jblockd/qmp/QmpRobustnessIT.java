package jblockd.qmp;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/** Garbage, many clients and clients that do not read (SPEC.md §3 last paragraph). */
class QmpRobustnessIT {
    @TempDir
    Path dir;

    /** A seeded generator of broken and odd QMP input. */
    private static byte[] garbage(Random r) {
        String[] valid = {"{\"execute\":\"query-version\"}", "{\"execute\":\"query-commands\",\"id\":[1,{\"a\":2}]}",
                "{\"execute\":\"blockdev-del\",\"arguments\":{\"node-name\":\"x\"}}"};
        return switch (r.nextInt(10)) {
            case 0 -> { // truncated JSON, then closed (string and brackets) so it stays one value
                String v = valid[r.nextInt(valid.length)];
                yield close(v.substring(0, 1 + r.nextInt(v.length() - 1))).getBytes(StandardCharsets.UTF_8);
            }
            case 1 -> ("{\"execute\":\"blockdev-add\",\"arguments\":{\"driver\":" + r.nextInt() + "}}")
                    .getBytes(StandardCharsets.UTF_8);
            case 2 -> { // deep nesting, over the limit
                int depth = 1000 + r.nextInt(100);
                yield ("[".repeat(depth) + "]".repeat(depth)).getBytes(StandardCharsets.UTF_8);
            }
            case 3 -> { // huge string (over 1 MiB sometimes)
                int n = r.nextInt(20) == 0 ? (1 << 20) + 10 : r.nextInt(5000);
                yield ("{\"execute\":\"" + "x".repeat(n) + "\"}").getBytes(StandardCharsets.UTF_8);
            }
            case 4 -> { // binary
                byte[] b = new byte[1 + r.nextInt(64)];
                r.nextBytes(b);
                for (int i = 0; i < b.length; i++) {
                    if (b[i] == '{' || b[i] == '[' || b[i] == '"' || b[i] == '\'') {
                        b[i] = 'x'; // keep binary out of (never ending) structures
                    }
                }
                yield b;
            }
            case 5 -> ("{\"execute\":\"query-named-block-nodes\",\"arguments\":{\"flat\":" + r.nextDouble() + "}}")
                    .getBytes(StandardCharsets.UTF_8);
            case 6 -> "{'execute':'query-version','id':'single'}".getBytes(StandardCharsets.UTF_8);
            case 7 -> "}]:,".getBytes(StandardCharsets.UTF_8);
            case 8 -> ("{\"execute\":\"blockdev-add\",\"arguments\":{\"driver\":\"blkdebug\",\"node-name\":\"b\","
                    + "\"image\":{\"driver\":\"null-co\"},\"inject-error\":[{\"event\":" + r.nextInt(3) + "}]}}")
                    .getBytes(StandardCharsets.UTF_8);
            default -> valid[r.nextInt(valid.length)].getBytes(StandardCharsets.UTF_8);
        };
    }

    /** Closes an open string and open brackets so the text is one complete (maybe invalid) value. */
    private static String close(String prefix) {
        StringBuilder closers = new StringBuilder();
        boolean inString = false;
        boolean escape = false;
        for (char ch : prefix.toCharArray()) {
            if (inString) {
                if (escape) {
                    escape = false;
                } else if (ch == '\\') {
                    escape = true;
                } else if (ch == '"') {
                    inString = false;
                }
            } else if (ch == '"') {
                inString = true;
            } else if (ch == '{') {
                closers.insert(0, '}');
            } else if (ch == '[') {
                closers.insert(0, ']');
            } else if (ch == '}' || ch == ']') {
                closers.deleteCharAt(0);
            }
        }
        return prefix + (escape ? "x" : "") + (inString ? "\"" : "") + closers;
    }

    private static JsonNode replyWithId(QmpTestClient c, String id) throws IOException {
        JsonNode reply;
        do {
            reply = c.nextReply();
        } while (!id.equals(reply.path("id").asText()));
        return reply;
    }

    @Test
    void tenThousandGarbledMessagesLeaveTheDaemonAnswering() throws Exception {
        Random r = new Random(20261121L);
        try (DaemonProcess d = DaemonProcess.start(dir); QmpTestClient c = d.connect()) {
            for (int i = 0; i < 10_000; i++) {
                c.sendRaw(garbage(r));
                c.sendRaw(r.nextBoolean() ? "\n" : " ");
                if (i % 500 == 499) {
                    // a checked request: the stream must still be in sync
                    c.sendRaw("{\"execute\":\"query-version\",\"id\":\"probe" + i + "\"}\n");
                    assertThat(replyWithId(c, "probe" + i).at("/return/qemu/major").asInt()).isEqualTo(7);
                }
            }
            // the same connection still works after all of it
            c.sendRaw("\n{\"execute\":\"query-version\",\"id\":\"final\"}\n");
            JsonNode reply = replyWithId(c, "final");
            assertThat(reply.at("/return/qemu/minor").asInt()).isEqualTo(2);
            try (QmpTestClient fresh = d.connect()) {
                assertThat(fresh.executeOk("query-version").at("/qemu/major").asInt()).isEqualTo(7);
            }
            assertThat(d.isAlive()).isTrue();
        }
    }

    @Test
    void hundredClientsEachReceiveTheShutdownEvent() throws Exception {
        DaemonProcess d = DaemonProcess.start(dir);
        List<QmpTestClient> clients = new ArrayList<>();
        try {
            for (int i = 0; i < 100; i++) {
                clients.add(d.connect());
            }
            clients.getFirst().execute("quit");
            for (QmpTestClient c : clients) {
                JsonNode ev = c.waitEvent("SHUTDOWN", Duration.ofSeconds(10));
                assertThat(ev.at("/data/reason").asText()).isEqualTo("host-qmp-quit");
                assertThat(ev.at("/timestamp/seconds").asLong()).isPositive();
                assertThat(ev.at("/timestamp/microseconds").asLong()).isBetween(0L, 999_999L);
            }
            assertThat(d.waitFor(Duration.ofSeconds(20))).isZero();
        } finally {
            clients.forEach(QmpTestClient::close);
            d.close();
        }
    }

    @Test
    void aClientThatNeverReadsDoesNotDelayOthers() throws Exception {
        try (DaemonProcess d = DaemonProcess.start(dir);
             SocketChannel silent = SocketChannel.open(StandardProtocolFamily.UNIX);
             QmpTestClient other = d.connect()) {
            silent.connect(UnixDomainSocketAddress.of(d.qmpSocket()));
            // negotiate, then flood with requests whose replies are never read
            byte[] req = "{\"execute\":\"query-qmp-schema\"}\n".getBytes(StandardCharsets.UTF_8);
            silent.write(ByteBuffer.wrap("{\"execute\":\"qmp_capabilities\"}\n".getBytes(StandardCharsets.UTF_8)));
            CountDownLatch flooding = new CountDownLatch(1);
            Thread flood = Thread.ofVirtual().start(() -> {
                try {
                    flooding.countDown();
                    for (int i = 0; i < 100_000 && !Thread.currentThread().isInterrupted(); i++) {
                        silent.write(ByteBuffer.wrap(req)); // blocks once the daemon stops reading us
                    }
                } catch (IOException e) {
                    // closed at the end of the test
                }
            });
            flooding.await();
            Thread.sleep(500); // let the silent client's buffers fill up
            long worst = 0;
            for (int i = 0; i < 200; i++) {
                long t0 = System.nanoTime();
                other.executeOk("query-version");
                worst = Math.max(worst, System.nanoTime() - t0);
            }
            assertThat(Duration.ofNanos(worst)).isLessThan(Duration.ofSeconds(1));
            flood.interrupt();
            silent.close();
            flood.join(5000);
        }
    }
}
