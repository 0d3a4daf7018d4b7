package jblockd.fuzz;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CopyOnWriteArrayList;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.io.TempDir;

import com.code_intelligence.jazzer.junit.FuzzTest;
import com.fasterxml.jackson.databind.JsonNode;

import jblockd.daemon.Daemon;
import jblockd.qapi.QmpError;
import jblockd.qmp.CommandRegistry;
import jblockd.qmp.QapiSchema;
import jblockd.qmp.QmpAddress;
import jblockd.qmp.QmpDispatcher;
import jblockd.qmp.QmpFramer;
import jblockd.qmp.QmpJson;
import jblockd.qmp.QmpServer;

/**
 * QMP end to end: the input is what a client sends after the greeting and qmp_capabilities,
 * over a real UNIX socket to a real {@link QmpServer} (framer, UTF-8 check, JSON parser,
 * envelope check, schema validation, typed binding, dispatch) whose registry holds only a
 * harmless command set (queries, stop/cont, and verbs that can only fail on an empty daemon:
 * no file is opened or created, nothing is removed that a later input needs). Every command of
 * the schema outside that set is still validated and bound in-process, without being run.
 * <p>
 * Invariants per input: exactly one reply per framed text or framing error, in order, each a
 * {@code return} or an {@code error} with a known class and a non-empty desc; no handler fails
 * with an unexpected RuntimeException (the dispatcher would turn it into a GenericError);
 * validation and binding throw only QmpError; the server keeps accepting (every input opens a
 * new connection); bounded time. Seeds: transcripts of real sessions (QmpFuzzTestInputs).
 */
class QmpFuzzTest {
    /** Commands a fuzz input may run: none touches files, sockets or state another input needs. */
    private static final Set<String> HARMLESS = Set.of("query-version", "query-commands", "query-block",
            "query-named-block-nodes", "query-block-exports", "query-block-jobs", "query-jobs",
            "query-blockstats", "query-objects", "query-status", "stop", "cont", "blockdev-del",
            "block-job-set-speed", "block-job-cancel", "block-job-pause", "block-job-resume",
            "block-job-complete", "block-job-dismiss", "block-job-finalize", "job-pause", "job-resume",
            "job-cancel", "job-complete", "job-dismiss", "job-finalize", "block-dirty-bitmap-remove",
            "block-dirty-bitmap-clear", "block-dirty-bitmap-enable", "block-dirty-bitmap-disable",
            "block-dirty-bitmap-merge", "block-dirty-bitmap-add", "block_resize", "block-set-write-threshold",
            "block-export-del", "nbd-server-remove", "object-del", "change-backing-file", "qmp_capabilities");
    private static final Set<String> ERROR_CLASSES = Set.of("GenericError", "CommandNotFound", "DeviceNotActive",
            "DeviceNotFound", "KVMMissingCap");

    @TempDir
    static Path dir;
    private static Daemon daemon;
    private static QmpServer server;
    private static Path socket;
    private static final List<RuntimeException> handlerBugs = new CopyOnWriteArrayList<>();

    @BeforeAll
    static void start() throws Exception {
        daemon = Daemon.builder().build();
        CommandRegistry harmless = new CommandRegistry();
        for (String name : HARMLESS) {
            wrap(harmless, daemon.registry().get(name));
        }
        QmpDispatcher dispatcher = new QmpDispatcher(daemon.schema(), harmless, daemon.json());
        socket = dir.resolve("qmp.sock");
        server = new QmpServer(new QmpAddress.Unix(socket), dispatcher, daemon.events(), "fuzz", 7, 2, 0);
        server.start();
    }

    /** Registers {@code e} with a handler that records an unexpected RuntimeException. */
    private static <A> void wrap(CommandRegistry into, CommandRegistry.Entry<A> e) {
        into.register(e.name(), e.argsType(), args -> {
            try {
                return e.handler().handle(args);
            } catch (RuntimeException bug) {
                handlerBugs.add(bug);
                throw bug;
            }
        });
    }

    @AfterAll
    static void stop() {
        server.close();
        daemon.close();
    }

    @FuzzTest
    void session(byte[] input) throws Exception {
        int expected = 1 + countRequests(input);
        List<JsonNode> replies = FuzzChecks.bounded(input.length, () -> converse(input));
        assertThat(replies).as("one reply per request").hasSize(expected);
        for (JsonNode r : replies) {
            if (r.has("error")) {
                JsonNode err = r.get("error");
                assertThat(err.path("class").asText()).isIn(ERROR_CLASSES);
                assertThat(err.path("desc").asText()).isNotBlank();
            } else {
                assertThat(r.has("return")).as("reply %s", r).isTrue();
            }
        }
        if (!handlerBugs.isEmpty()) {
            RuntimeException bug = handlerBugs.getFirst();
            handlerBugs.clear();
            throw new AssertionError("a command handler failed unexpectedly", bug);
        }
        validateEverywhere(input);
    }

    /** Sends qmp_capabilities and the input, half-closes, returns every non-event reply. */
    private static List<JsonNode> converse(byte[] input) throws Exception {
        QmpJson json = daemon.json();
        try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            ch.connect(UnixDomainSocketAddress.of(socket));
            BufferedReader in = new BufferedReader(new InputStreamReader(Channels.newInputStream(ch),
                    StandardCharsets.UTF_8));
            assertThat(in.readLine()).as("greeting").startsWith("{\"QMP\"");
            write(ch, "{\"execute\":\"qmp_capabilities\"}\n".getBytes(StandardCharsets.US_ASCII));
            write(ch, input);
            ch.shutdownOutput();
            List<JsonNode> replies = new ArrayList<>();
            for (String line; (line = in.readLine()) != null; ) {
                JsonNode msg = json.parse(line.getBytes(StandardCharsets.UTF_8));
                if (!msg.has("event")) {
                    replies.add(msg);
                }
            }
            return replies;
        }
    }

    private static void write(SocketChannel ch, byte[] bytes) throws Exception {
        ByteBuffer b = ByteBuffer.wrap(bytes);
        while (b.hasRemaining()) {
            ch.write(b);
        }
    }

    /** Texts plus framing errors: each earns one reply. */
    private static int countRequests(byte[] input) {
        int[] n = new int[1];
        new QmpFramer(QmpServer.MAX_MESSAGE, QmpJson.MAX_NESTING).feed(input, 0, input.length, new QmpFramer.Sink() {
            @Override
            public void text(byte[] json) {
                n[0]++;
            }

            @Override
            public void error(String desc) {
                n[0]++;
            }
        });
        return n[0];
    }

    /** Every framed request naming any schema command: validated and bound, never run. */
    private static void validateEverywhere(byte[] input) throws Exception {
        QmpDispatcher full = daemon.dispatcher();
        List<byte[]> texts = new ArrayList<>();
        new QmpFramer(QmpServer.MAX_MESSAGE, QmpJson.MAX_NESTING).feed(input, 0, input.length, new QmpFramer.Sink() {
            @Override
            public void text(byte[] json) {
                texts.add(json);
            }

            @Override
            public void error(String desc) {
            }
        });
        for (byte[] text : texts) {
            JsonNode req;
            try {
                req = full.json().parse(text);
            } catch (java.io.IOException e) {
                continue;
            }
            if (!req.isObject() || !req.path("execute").isTextual()) {
                continue;
            }
            QapiSchema.Command cmd = full.schema().command(req.get("execute").asText());
            CommandRegistry.Entry<?> entry = full.registry().get(req.get("execute").asText());
            JsonNode args = req.get("arguments");
            if (cmd == null || entry == null || (args != null && !args.isObject())) {
                continue;
            }
            try {
                full.json().bind(full.validator().validateArguments(cmd, args, false), entry.argsType());
            } catch (QmpError e) {
                assertThat(e.errorClass()).isNotNull();
                assertThat(e.desc()).isNotBlank();
            }
        }
    }
}
