package jblockd.daemon;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.qapi.ErrorClass;
import jblockd.qapi.QmpError;
import jblockd.qmp.QmpServer;
import jblockd.testsupport.QmpTestClient;

/** Daemon as a library: in-process commands, two daemons in one JVM, event delivery and slow clients. */
class DaemonEmbeddedTest {
    @TempDir
    Path dir;

    @Test
    void twoDaemonsInOneJvmAreIndependent() throws Exception {
        Path img = dir.resolve("a.raw");
        Files.write(img, new byte[4096]);
        try (Daemon a = Daemon.builder().qmp("unix:" + dir.resolve("a.sock")).build();
             Daemon b = Daemon.builder().qmp("unix:" + dir.resolve("b.sock")).build()) {
            a.start();
            b.start();
            a.executeCommand("blockdev-add", QmpTestClient.json(
                    "{\"driver\":\"file\",\"node-name\":\"fa\",\"filename\":\"" + img + "\"}"));
            assertThat(a.executeCommand("query-named-block-nodes", null)).hasSize(1);
            assertThat(b.executeCommand("query-named-block-nodes", null)).isEmpty();
            assertThatThrownBy(() -> b.executeCommand("blockdev-del", QmpTestClient.json("{\"node-name\":\"fa\"}")))
                    .isInstanceOf(QmpError.class).hasMessage("Failed to find node with node-name='fa'");
            QmpError nf = org.junit.jupiter.api.Assertions.assertThrows(QmpError.class,
                    () -> a.executeCommand("nosuch", null));
            assertThat(nf.errorClass()).isEqualTo(ErrorClass.COMMAND_NOT_FOUND);
            try (QmpTestClient ca = QmpTestClient.connectUnix(dir.resolve("a.sock"));
                 QmpTestClient cb = QmpTestClient.connectUnix(dir.resolve("b.sock"))) {
                a.events().stop();
                JsonNode ev = ca.waitEvent("STOP", Duration.ofSeconds(5));
                assertThat(ev.has("data")).isFalse(); // no data member at all
                assertThat(cb.events().poll(200, java.util.concurrent.TimeUnit.MILLISECONDS)).isNull();
            }
        }
        assertThat(dir.resolve("a.sock")).doesNotExist();
        assertThat(dir.resolve("b.sock")).doesNotExist();
    }

    @Test
    void inProcessListenersSeeEventsAsClientsDo() throws Exception {
        try (Daemon d = Daemon.builder().build()) {
            d.start();
            List<JsonNode> seen = new CopyOnWriteArrayList<>();
            d.events().addListener(seen::add);
            d.events().shutdown(false, "host-qmp-quit");
            assertThat(seen).hasSize(1);
            assertThat(seen.getFirst().get("event").asText()).isEqualTo("SHUTDOWN");
            assertThat(seen.getFirst().at("/data/guest").asBoolean()).isFalse();
            assertThat(QmpTestClient.memberNames(seen.getFirst())).containsExactly("timestamp", "event", "data");
        }
    }

    @Test
    void aClientThatDoesNotReadEventsIsDroppedWithoutBlockingTheEmitter() throws Exception {
        Path sock = dir.resolve("q.sock");
        try (Daemon d = Daemon.builder().qmp("unix:" + sock).build()) {
            d.start();
            QmpServer server = d.qmpServers().getFirst();
            try (SocketChannel silent = SocketChannel.open(StandardProtocolFamily.UNIX);
                 QmpTestClient reader = QmpTestClient.connectUnix(sock)) {
                silent.connect(UnixDomainSocketAddress.of(sock));
                silent.write(ByteBuffer.wrap("{\"execute\":\"qmp_capabilities\"}\n".getBytes(StandardCharsets.UTF_8)));
                // wait until both sessions are negotiated (the reader's events prove it for the silent one below)
                for (int i = 0; i < 100 && server.clientCount() < 2; i++) {
                    Thread.sleep(10);
                }
                Thread.sleep(200);
                int events = QmpServer.OUTBOX_CAPACITY * 4;
                Thread drain = Thread.ofVirtual().start(() -> {
                    for (int i = 0; i < events; i++) {
                        try {
                            reader.waitEvent("STOP", Duration.ofSeconds(10));
                        } catch (IOException e) {
                            throw new AssertionError(e);
                        }
                    }
                });
                long emitNanos = 0;
                for (int i = 0; i < events; i++) {
                    long e0 = System.nanoTime();
                    d.events().stop();
                    emitNanos = Math.max(emitNanos, System.nanoTime() - e0);
                    if (i % 256 == 255) {
                        Thread.sleep(2); // emitters produce bursts, not an endless stream
                    }
                }
                drain.join(30_000);
                assertThat(drain.isAlive()).as("the reading client got every event").isFalse();
                for (int i = 0; i < 200 && server.clientCount() > 1; i++) {
                    Thread.sleep(10);
                }
                assertThat(server.clientCount()).as("the silent client was dropped").isEqualTo(1);
                // never blocked on the silent client: the slowest single emission stays short
                assertThat(Duration.ofNanos(emitNanos)).isLessThan(Duration.ofMillis(500));
                assertThat(reader.executeOk("query-version").at("/qemu/major").asInt()).isEqualTo(7);
            }
        }
    }
}
