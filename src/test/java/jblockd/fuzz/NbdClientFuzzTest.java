package jblockd.fuzz;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.io.TempDir;

import com.code_intelligence.jazzer.junit.FuzzTest;

import jblockd.nbd.client.NbdClient;

/**
 * The NBD client's handshake and reply parser ({@link NbdClient}, the nbd driver's peer): a
 * scripted server on a real UNIX socket sends the input as its whole side of the conversation
 * (greeting, option replies, then simple and structured replies) while draining what the
 * client sends; the client negotiates and runs {@link #exercise} (read, write, block status,
 * zeroes, trim, flush).
 * <p>
 * Invariants per input: negotiation and every request end in a result or an IOException with
 * a message, never another exception; the client's reply thread does not die
 * ({@link Incidents}), so no request waits for ever (time bound); the process allocates no more
 * than the input justifies (a structured reply's length is checked before a buffer exists).
 * Seeds: what qemu-nbd 7.2 answered to this very sequence (captured with {@link #main}), and
 * its replies to qemu-io and nbdinfo (NbdClientFuzzTestInputs).
 */
class NbdClientFuzzTest {
    @TempDir
    static Path dir;
    private static ServerSocketChannel listener;
    private static Incidents incidents;

    @BeforeAll
    static void listen() throws IOException {
        incidents = new Incidents();
        listener = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        listener.bind(UnixDomainSocketAddress.of(dir.resolve("peer.sock")));
    }

    @AfterAll
    static void close() throws IOException {
        listener.close();
        incidents.close();
    }

    @FuzzTest
    void server(byte[] input) throws Exception {
        FuzzChecks.bounded(input.length, () -> {
            try (SocketChannel client = SocketChannel.open(listener.getLocalAddress());
                 SocketChannel peer = listener.accept()) {
                Thread script = Thread.ofVirtual().name("scripted-nbd-server").start(() -> play(peer, input));
                try (NbdClient c = NbdClient.negotiate(client, options())) {
                    exercise(c);
                } catch (IOException e) {
                    assertThat(e.getMessage()).as("%s", e).isNotBlank();
                } finally {
                    peer.close();
                    script.join();
                }
            }
        });
        incidents.assertNone();
    }

    private static NbdClient.Options options() {
        return NbdClient.Options.of("", "base:allocation", "qemu:allocation-depth");
    }

    /** Writes the script, then drains the client until it hangs up. */
    private static void play(SocketChannel peer, byte[] script) {
        try {
            ByteBuffer out = ByteBuffer.wrap(script);
            while (out.hasRemaining()) {
                peer.write(out);
            }
            peer.shutdownOutput();
            ByteBuffer drain = ByteBuffer.allocate(64 * 1024);
            while (peer.read(drain.clear()) >= 0) {
                // what the client sends is not checked here
            }
        } catch (IOException e) {
            // the client closed first
        }
    }

    /**
     * The requests the target makes once negotiated; each may fail with an IOException
     * (a refused or short reply), which must carry a message.
     */
    static void exercise(NbdClient c) throws IOException {
        long size = c.size();
        List<IoStep> steps = List.of(
                () -> c.read(0, ByteBuffer.allocate((int) Math.min(4096, size))),
                () -> c.write(0, ByteBuffer.allocate(512), false),
                () -> {
                    Map<Integer, List<NbdClient.Extent>> m = c.blockStatus(0, Math.min(size, 1 << 20), false);
                    assertThat(m).isNotNull();
                },
                () -> c.read(Math.max(0, size - 512), ByteBuffer.allocate(512)),
                () -> c.writeZeroes(4096, 4096, true, false),
                () -> c.trim(8192, 4096),
                c::flush);
        for (IoStep s : steps) {
            try {
                s.run();
            } catch (IOException e) {
                assertThat(e.getMessage()).as("%s", e).isNotBlank();
                if (!c.connected()) {
                    return;
                }
            }
        }
    }

    private interface IoStep {
        void run() throws IOException;
    }

    /**
     * Seed capture: runs {@link #exercise} against a real server at the UNIX socket
     * {@code args[0]} (a recording proxy in front of qemu-nbd records the server's side).
     */
    public static void main(String[] args) throws IOException {
        try (NbdClient c = NbdClient.connect(UnixDomainSocketAddress.of(Path.of(args[0])), options())) {
            exercise(c);
        }
    }
}
