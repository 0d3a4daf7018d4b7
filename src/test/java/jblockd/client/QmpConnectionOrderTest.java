package jblockd.client;

import static org.assertj.core.api.Assertions.assertThat;

import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * A reply's inline handler runs on the reader thread, between the events before and after it in
 * the stream, even while the sender waits in {@code get()}: a waiting thread can otherwise run a
 * future's dependents itself, concurrently with the reader. (That let a stale
 * {@code query-block-jobs} reply land after {@code BLOCK_JOB_PENDING} and made
 * {@code jblockctl backup --no-auto-finalize} wait forever.)
 */
@Timeout(60)
class QmpConnectionOrderTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    Path dir;

    /** Replies to each request with its id and then an event numbered after it. */
    private static void serve(SocketChannel c) {
        try (c) {
            c.write(ByteBuffer.wrap("{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n".getBytes()));
            ByteBuffer in = ByteBuffer.allocate(1 << 16);
            StringBuilder line = new StringBuilder();
            int seq = 0;
            while (c.read(in) >= 0) {
                in.flip();
                while (in.hasRemaining()) {
                    char ch = (char) in.get();
                    if (ch != '\n') {
                        line.append(ch);
                        continue;
                    }
                    JsonNode req = JSON.readTree(line.toString());
                    line.setLength(0);
                    seq++;
                    String out = "{\"return\": {\"seq\": " + seq + "}, \"id\": " + req.get("id") + "}\r\n"
                            + "{\"event\": \"TICK\", \"data\": {\"seq\": " + seq + "}, "
                            + "\"timestamp\": {\"seconds\": 0, \"microseconds\": 0}}\r\n";
                    ByteBuffer b = ByteBuffer.wrap(out.getBytes(StandardCharsets.UTF_8));
                    while (b.hasRemaining()) {
                        c.write(b);
                    }
                }
                in.clear();
            }
        } catch (Exception e) {
            // client gone
        }
    }

    @Test
    void inlineReplyHandlersRunOnTheReaderInStreamOrderWithEvents() throws Exception {
        Path sock = dir.resolve("q.sock");
        try (ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            server.bind(UnixDomainSocketAddress.of(sock));
            Thread.ofVirtual().start(() -> {
                try {
                    serve(server.accept());
                } catch (Exception e) {
                    // closed
                }
            });
            SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
            ch.connect(UnixDomainSocketAddress.of(sock));
            QmpConnection conn = new QmpConnection(ch, "test");
            // what the reader thread has seen, in order: "r<seq>" for replies, "e<seq>" for events
            List<String> seen = new ArrayList<>();
            AtomicReference<String> wrongThread = new AtomicReference<>();
            AtomicReference<Thread> reader = new AtomicReference<>();
            conn.addInlineListener(ev -> {
                reader.compareAndSet(null, Thread.currentThread());
                synchronized (seen) {
                    seen.add("e" + ev.data().path("seq").asInt());
                }
            });
            AtomicInteger n = new AtomicInteger();
            for (int i = 0; i < 3000; i++) {
                conn.send("tick", null, reply -> {
                    Thread r = reader.get();
                    if (r != null && r != Thread.currentThread() && wrongThread.get() == null) {
                        wrongThread.set(Thread.currentThread().toString());
                    }
                    synchronized (seen) {
                        seen.add("r" + reply.path("return").path("seq").asInt());
                    }
                    n.incrementAndGet();
                }).get(); // the sender waits, as Job's poll loop does
            }
            conn.close();
            assertThat(wrongThread.get()).as("an inline reply handler ran off the reader thread").isNull();
            List<String> expected = new ArrayList<>();
            for (int s = 1; s <= 3000; s++) {
                expected.add("r" + s);
                expected.add("e" + s);
            }
            synchronized (seen) {
                assertThat(seen.subList(0, 5998)).isEqualTo(expected.subList(0, 5998));
            }
        }
    }
}
