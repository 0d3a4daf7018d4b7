package jblockd.fuzz;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.BufferedInputStream;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.io.TempDir;

import com.code_intelligence.jazzer.junit.FuzzTest;

import jblockd.block.BlockNode;
import jblockd.block.DriverRegistry;
import jblockd.block.ImageCreator;
import jblockd.block.NodeGraph;
import jblockd.device.Device;
import jblockd.device.GuestIo;
import jblockd.device.RunState;
import jblockd.nbd.client.NbdClient;
import jblockd.nbd.server.NbdExport;
import jblockd.nbd.server.NbdServer;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.QapiEvents;
import jblockd.testsupport.ExternalTools;

/**
 * NBD option haggling and transmission through the production server: a real {@link NbdServer}
 * on a UNIX socket exporting (writable, with qemu:allocation-depth) a 1 MiB qcow2 image opened
 * through the node graph. The input is everything a client sends after the server's greeting;
 * the harness sends it, half-closes and reads until the server hangs up.
 * <p>
 * Invariants per input: every reply is the one the client's bytes call for, with the error
 * code or option error QEMU's checks give and a valid message, and the server hangs up exactly
 * where the stream stops making sense ({@link NbdConversation}); the server ends the connection
 * within the time bound (no hang on a
 * half-sent option or request, no wait for a payload that never comes); no connection or
 * request thread fails with an unexpected exception ({@link Incidents}); the process allocates
 * no more than the input can justify. Every 256th input, and at the end, a real client still
 * negotiates and reads (the server keeps serving) and the image, written by the fuzzer's
 * requests, passes {@code qemu-img check}. Seeds: what qemu-io, nbdinfo and qemu-img sent to
 * qemu-nbd 7.2 (NbdServerFuzzTestInputs), and the kernel client's handshake as nbd-client 3.24
 * sends it ({@code nbd-client-go}, {@code nbd-client-list}; its transmission requests come from
 * the kernel, which the test machine's kernel cannot run: it has no nbd module).
 */
class NbdServerFuzzTest {
    private static final long SIZE = 1 << 20;

    @TempDir
    static Path dir;
    private static NodeGraph graph;
    private static NbdServer server;
    private static NbdExport export;
    private static Path image;
    private static Path socket;
    private static Incidents incidents;
    private static long inputs;

    @BeforeAll
    static void serve() throws IOException {
        incidents = new Incidents();
        graph = new NodeGraph(DriverRegistry.standard());
        image = dir.resolve("disk.qcow2");
        graph.drivers().creator("qcow2").orElseThrow().create(ImageCreator.Options.of(image, SIZE));
        BlockNode root = graph.add(graph.imageOptions(image, "qcow2", false, false, "disk0", true));
        Device device = new Device("drive0", root, BlockdevOnError.REPORT, BlockdevOnError.ENOSPC);
        export = new NbdExport("exp0", "", "fuzzed", true,
                new GuestIo(device, new RunState(QapiEvents.NONE, () -> { }), QapiEvents.NONE), true, List.of());
        server = new NbdServer();
        socket = dir.resolve("nbd.sock");
        server.start(UnixDomainSocketAddress.of(socket), 0);
        server.addExport(export);
    }

    @AfterAll
    static void stop() throws Exception {
        try {
            stillServes();
        } finally {
            server.stop();
            graph.closeAll();
            incidents.close();
        }
    }

    @FuzzTest
    void client(byte[] input) throws Exception {
        FuzzChecks.bounded(input.length, () -> converse(input));
        incidents.assertNone();
        if (++inputs % 256 == 0) {
            stillServes();
        }
    }

    private static void converse(byte[] input) throws IOException {
        try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            ch.connect(UnixDomainSocketAddress.of(socket));
            ByteBuffer greeting = ByteBuffer.allocate(18);
            while (greeting.hasRemaining() && ch.read(greeting) >= 0) {
                // the fixed newstyle greeting: NBDMAGIC, IHAVEOPT, 16-bit flags
            }
            assertThat(new String(greeting.array(), 0, 8, StandardCharsets.US_ASCII)).isEqualTo("NBDMAGIC");
            ByteBuffer in = ByteBuffer.wrap(input);
            while (in.hasRemaining()) {
                ch.write(in);
            }
            ch.shutdownOutput();
            NbdConversation.check(input, new BufferedInputStream(Channels.newInputStream(ch)), SIZE);
        }
    }

    /** A real client negotiates, reads and sees the export as it was offered. */
    private static void stillServes() throws Exception {
        FuzzChecks.bounded(0, () -> {
            try (NbdClient c = NbdClient.connect(UnixDomainSocketAddress.of(socket),
                    NbdClient.Options.of("", "base:allocation"))) {
                assertThat(c.size()).isEqualTo(SIZE);
                c.read(0, ByteBuffer.allocate(4096));
            }
            // the fuzzer's writes went through qcow2: the image must still be consistent
            export.io().root().flush();
            if (ExternalTools.present("qemu-img")) {
                ExternalTools.ok("qemu-img", "check", "-U", "-f", "qcow2", image.toString());
            }
        });
        incidents.assertNone();
    }
}
