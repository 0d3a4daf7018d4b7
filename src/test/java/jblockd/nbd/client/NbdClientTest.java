package jblockd.nbd.client;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.Errno;
import jblockd.block.IoError;
import jblockd.nbd.proto.Nbd;

/**
 * The client against a scripted server: the handshake it expects, and what it does with replies
 * that break the protocol (a chunk outside the request, an unknown handle, a context it did not
 * select): the request fails with EIO, nothing is written out of bounds, later requests fail too.
 */
@Timeout(30) // a request left waiting is the failure mode: it must fail, not hang
class NbdClientTest {
    @TempDir
    Path dir;

    /** One connection's server side after a handshake: reads a request, answers what the test says. */
    @FunctionalInterface
    private interface Script {
        void serve(SocketChannel ch, long handle, int type, long offset, int length) throws IOException;
    }

    private NbdClient connect(Script script, String... contexts) throws Exception {
        Path sock = dir.resolve("s" + System.nanoTime());
        ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        server.bind(UnixDomainSocketAddress.of(sock));
        CompletableFuture<Void> done = CompletableFuture.runAsync(() -> {
            try (server; SocketChannel ch = server.accept()) {
                handshake(ch, contexts);
                while (true) {
                    ByteBuffer h = read(ch, 28);
                    h.getInt();
                    h.getShort();
                    int type = h.getShort();
                    long handle = h.getLong();
                    long offset = h.getLong();
                    int length = h.getInt();
                    if (type == Nbd.CMD_DISC) {
                        return;
                    }
                    script.serve(ch, handle, type, offset, length);
                }
            } catch (IOException e) {
                // the client went away
            }
        });
        NbdClient c = NbdClient.connect(UnixDomainSocketAddress.of(sock), NbdClient.Options.of("e", contexts));
        assertThat(done.isCompletedExceptionally()).isFalse();
        return c;
    }

    /** Newstyle greeting, ACK to STRUCTURED_REPLY, each context as id 7+i, GO with a 1 MiB export. */
    private static void handshake(SocketChannel ch, String[] contexts) throws IOException {
        write(ch, ByteBuffer.allocate(18).putLong(Nbd.NBDMAGIC).putLong(Nbd.IHAVEOPT)
                .putShort((short) (Nbd.FLAG_FIXED_NEWSTYLE | Nbd.FLAG_NO_ZEROES)).flip());
        read(ch, 4);
        while (true) {
            ByteBuffer o = read(ch, 16);
            o.getLong();
            int option = o.getInt();
            read(ch, o.getInt());
            if (option == Nbd.OPT_SET_META_CONTEXT) {
                for (int i = 0; i < contexts.length; i++) {
                    byte[] n = contexts[i].getBytes(StandardCharsets.UTF_8);
                    reply(ch, option, Nbd.REP_META_CONTEXT, ByteBuffer.allocate(4 + n.length).putInt(7 + i).put(n).flip());
                }
            } else if (option == Nbd.OPT_GO) {
                reply(ch, option, Nbd.REP_INFO, ByteBuffer.allocate(12).putShort((short) Nbd.INFO_EXPORT)
                        .putLong(1 << 20).putShort((short) (Nbd.FLAG_HAS_FLAGS | Nbd.FLAG_SEND_FLUSH)).flip());
                reply(ch, option, Nbd.REP_ACK, ByteBuffer.allocate(0));
                return;
            }
            reply(ch, option, Nbd.REP_ACK, ByteBuffer.allocate(0)); // STRUCTURED_REPLY, or the end of SET
        }
    }

    private static void reply(SocketChannel ch, int option, int type, ByteBuffer data) throws IOException {
        write(ch, ByteBuffer.allocate(20 + data.remaining()).putLong(Nbd.OPT_REPLY_MAGIC).putInt(option).putInt(type)
                .putInt(data.remaining()).put(data).flip());
    }

    private static ByteBuffer chunk(int flags, int type, long handle, ByteBuffer payload) {
        return ByteBuffer.allocate(20 + payload.remaining()).putInt(Nbd.STRUCTURED_REPLY_MAGIC).putShort((short) flags)
                .putShort((short) type).putLong(handle).putInt(payload.remaining()).put(payload).flip();
    }

    private static ByteBuffer read(SocketChannel ch, int n) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(n);
        while (b.hasRemaining()) {
            if (ch.read(b) < 0) {
                throw new IOException("closed");
            }
        }
        return b.flip();
    }

    private static void write(SocketChannel ch, ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            ch.write(b);
        }
    }

    @Test
    void readsDataAndHoleChunksIntoTheirPlaces() throws Exception {
        try (NbdClient c = connect((ch, handle, type, offset, length) -> {
            write(ch, chunk(0, Nbd.REPLY_TYPE_OFFSET_HOLE, handle,
                    ByteBuffer.allocate(12).putLong(offset).putInt(4).flip()));
            write(ch, chunk(Nbd.REPLY_FLAG_DONE, Nbd.REPLY_TYPE_OFFSET_DATA, handle,
                    ByteBuffer.allocate(12).putLong(offset + 4).putInt(0x01020304).flip()));
        })) {
            assertThat(c.size()).isEqualTo(1 << 20);
            ByteBuffer b = ByteBuffer.allocate(8);
            for (int i = 0; i < 8; i++) {
                b.put(i, (byte) 0x77);
            }
            c.read(4096, b);
            assertThat(b.array()).containsExactly(0, 0, 0, 0, 1, 2, 3, 4);
        }
    }

    @Test
    void aChunkOutsideTheReadFailsItAndTheConnection() throws Exception {
        try (NbdClient c = connect((ch, handle, type, offset, length) -> write(ch, chunk(Nbd.REPLY_FLAG_DONE,
                Nbd.REPLY_TYPE_OFFSET_DATA, handle, ByteBuffer.allocate(12).putLong(offset + length).putInt(1).flip())))) {
            ByteBuffer b = ByteBuffer.allocate(8);
            assertThatThrownBy(() -> c.read(0, b)).isInstanceOf(IoError.class)
                    .satisfies(e -> assertThat(((IoError) e).errno()).isEqualTo(Errno.EIO))
                    .hasMessageContaining("outside the READ");
            assertThat(b.array()).containsOnly(0);
            assertThatThrownBy(() -> c.read(0, ByteBuffer.allocate(8))).isInstanceOf(IoError.class)
                    .hasMessageContaining("connection lost");
        }
    }

    /** A server that dies in the middle of a data chunk: the read fails (never hangs), the buffer stays as it was. */
    @Test
    void aServerClosingMidReplyFailsTheRequestAndLaterOnes() throws Exception {
        try (NbdClient c = connect((ch, handle, type, offset, length) -> {
            ByteBuffer whole = chunk(Nbd.REPLY_FLAG_DONE, Nbd.REPLY_TYPE_OFFSET_DATA, handle,
                    ByteBuffer.allocate(8 + length).putLong(offset).put(new byte[length]).flip());
            write(ch, whole.limit(20 + 8 + 100)); // header, offset and 100 of the bytes, then gone
            ch.close();
        })) {
            ByteBuffer b = ByteBuffer.allocate(4096);
            CompletableFuture<Void> read = CompletableFuture.runAsync(() -> {
                try {
                    c.read(0, b);
                } catch (IOException e) {
                    throw new java.util.concurrent.CompletionException(e);
                }
            }, r -> Thread.ofVirtual().start(r)); // not the common pool: the scripted server holds it
            assertThatThrownBy(() -> read.get(20, java.util.concurrent.TimeUnit.SECONDS))
                    .hasCauseInstanceOf(IoError.class);
            assertThat(b.position()).isZero();
            assertThatThrownBy(() -> c.read(0, ByteBuffer.allocate(8))).isInstanceOf(IoError.class);
        }
    }

    /** Garbage instead of a reply (a bad magic): the request fails and the connection ends. */
    @Test
    void garbageInsteadOfAReplyFailsTheRequestAndTheConnection() throws Exception {
        try (NbdClient c = connect((ch, handle, type, offset, length) ->
                write(ch, ByteBuffer.wrap("HTTP/1.1 400 Bad Request\r\n\r\n".getBytes(StandardCharsets.UTF_8))))) {
            ByteBuffer b = ByteBuffer.allocate(64);
            assertThatThrownBy(() -> c.read(0, b)).isInstanceOf(IoError.class)
                    .satisfies(e -> assertThat(((IoError) e).errno()).isEqualTo(Errno.EIO));
            assertThat(b.array()).containsOnly(0);
            assertThatThrownBy(() -> c.write(0, ByteBuffer.allocate(8), false)).isInstanceOf(IoError.class);
        }
    }

    @Test
    void anErrorChunkIsTheRequestsErrnoAndTheConnectionStays() throws Exception {
        try (NbdClient c = connect((ch, handle, type, offset, length) -> {
            if (type == Nbd.CMD_FLUSH) {
                write(ch, ByteBuffer.allocate(16).putInt(Nbd.SIMPLE_REPLY_MAGIC).putInt(0).putLong(handle).flip());
                return;
            }
            byte[] msg = "no space".getBytes(StandardCharsets.UTF_8);
            write(ch, chunk(Nbd.REPLY_FLAG_DONE, Nbd.REPLY_TYPE_ERROR, handle,
                    ByteBuffer.allocate(6 + msg.length).putInt(28).putShort((short) msg.length).put(msg).flip()));
        })) {
            assertThatThrownBy(() -> c.read(0, ByteBuffer.allocate(8))).isInstanceOf(IoError.class)
                    .satisfies(e -> assertThat(((IoError) e).errno()).isEqualTo(Errno.ENOSPC))
                    .hasMessageContaining("no space");
            c.flush();
        }
    }

    @Test
    void blockStatusKeepsItsContextsAndRefusesOnesNotSelected() throws Exception {
        try (NbdClient c = connect((ch, handle, type, offset, length) -> {
            int ctx = offset == 0 ? 7 : 99;
            write(ch, chunk(Nbd.REPLY_FLAG_DONE, Nbd.REPLY_TYPE_BLOCK_STATUS, handle,
                    ByteBuffer.allocate(20).putInt(ctx).putInt(65536).putInt(3).putInt(1 << 20).putInt(0).flip()));
        }, "base:allocation")) {
            assertThat(c.metaContexts()).containsEntry("base:allocation", 7);
            // the last extent is clipped to the request
            assertThat(c.blockStatus(0, 131072, false).get(7))
                    .containsExactly(new NbdClient.Extent(65536, 3), new NbdClient.Extent(65536, 0));
            assertThatThrownBy(() -> c.blockStatus(4096, 4096, false)).isInstanceOf(IoError.class)
                    .hasMessageContaining("connection lost");
        }
    }

    @Test
    void aReplyForNoRequestEndsTheConnection() throws Exception {
        try (NbdClient c = connect((ch, handle, type, offset, length) ->
                write(ch, ByteBuffer.allocate(16).putInt(Nbd.SIMPLE_REPLY_MAGIC).putInt(0).putLong(handle + 1000)
                        .flip()))) {
            assertThatThrownBy(c::flush).isInstanceOf(IoError.class).hasMessageContaining("unknown handle");
        }
    }

    @Test
    void requestsTheServerCannotTakeAreRefusedWithoutSending() throws Exception {
        try (NbdClient c = connect((ch, handle, type, offset, length) -> {
            throw new IOException("nothing should arrive");
        })) {
            assertThatThrownBy(() -> c.trim(0, 4096)).isInstanceOf(IoError.class).hasMessageContaining("TRIM");
            assertThatThrownBy(() -> c.blockStatus(0, 4096, false)).hasMessageContaining("no meta context");
            assertThat(c.readOnly()).isFalse();
            assertThat(c.structuredReplies()).isTrue();
        }
    }

    /** A server that answers every option with {@code error} (as a TLS-only server does), recording what it got. */
    private CompletableFuture<java.util.List<Integer>> refusingServer(Path sock, int error) throws IOException {
        ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        server.bind(UnixDomainSocketAddress.of(sock));
        return CompletableFuture.supplyAsync(() -> {
            java.util.List<Integer> options = new java.util.ArrayList<>();
            try (server; SocketChannel ch = server.accept()) {
                write(ch, ByteBuffer.allocate(18).putLong(Nbd.NBDMAGIC).putLong(Nbd.IHAVEOPT)
                        .putShort((short) (Nbd.FLAG_FIXED_NEWSTYLE | Nbd.FLAG_NO_ZEROES)).flip());
                read(ch, 4);
                while (true) {
                    ByteBuffer o = read(ch, 16);
                    o.getLong();
                    int option = o.getInt();
                    read(ch, o.getInt());
                    options.add(option);
                    if (option == Nbd.OPT_ABORT) {
                        return options;
                    }
                    byte[] msg = "refused".getBytes(StandardCharsets.UTF_8);
                    reply(ch, option, error, ByteBuffer.wrap(msg));
                }
            } catch (IOException e) {
                return options; // the client closed
            }
        });
    }

    @Test
    void aTlsOnlyServersRefusalIsMetAtGoAsInQemuAndNamesTheOption() throws Exception {
        Path sock = dir.resolve("tls.sock");
        CompletableFuture<java.util.List<Integer>> seen = refusingServer(sock, Nbd.REP_ERR_TLS_REQD);
        assertThatThrownBy(() -> NbdClient.connect(UnixDomainSocketAddress.of(sock),
                NbdClient.Options.of("e", "base:allocation")))
                .isInstanceOfSatisfying(NbdClient.OptionRefused.class, e -> {
                    assertThat(e.option()).isEqualTo(Nbd.OPT_GO);
                    assertThat(e.reply()).isEqualTo(Nbd.REP_ERR_TLS_REQD);
                    assertThat(e.serverMessage()).isEqualTo("refused");
                    assertThat(e).hasMessage("TLS negotiation required before option 7 (go)");
                });
        // as QEMU: the refused STRUCTURED_REPLY is tolerated, GO meets the refusal, then the
        // abort (proto.md: a client that gives up says so); no meta context without structured replies
        assertThat(seen.get(10, java.util.concurrent.TimeUnit.SECONDS))
                .containsExactly(Nbd.OPT_STRUCTURED_REPLY, Nbd.OPT_GO, Nbd.OPT_ABORT);
    }

    @Test
    void anUnknownExportIsRefusedAtGoWithItsReplyType() throws Exception {
        Path sock = dir.resolve("unknown.sock");
        CompletableFuture<java.util.List<Integer>> seen = refusingServer(sock, Nbd.REP_ERR_UNKNOWN);
        assertThatThrownBy(() -> NbdClient.connect(UnixDomainSocketAddress.of(sock), NbdClient.Options.of("nope")))
                .isInstanceOfSatisfying(NbdClient.OptionRefused.class, e -> {
                    assertThat(e.option()).isEqualTo(Nbd.OPT_GO);
                    assertThat(e.reply()).isEqualTo(Nbd.REP_ERR_UNKNOWN);
                });
        assertThat(seen.get(10, java.util.concurrent.TimeUnit.SECONDS))
                .containsExactly(Nbd.OPT_STRUCTURED_REPLY, Nbd.OPT_GO, Nbd.OPT_ABORT);
    }

    @Test
    void theServerClosingCompletesDisconnectedWithoutARequest() throws Exception {
        NbdClient c = connect((ch, handle, type, offset, length) -> ch.close());
        try (c) {
            assertThat(c.connected()).isTrue();
            assertThatThrownBy(c::flush).isInstanceOf(IoError.class); // the script closes on the first request
            IOException cause = c.disconnected().get(10, java.util.concurrent.TimeUnit.SECONDS);
            assertThat(cause).isNotNull();
            assertThat(c.connected()).isFalse();
        }
    }
}
