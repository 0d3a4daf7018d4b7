package jblockd.block.nbd;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.Allocation;
import jblockd.block.BlockdevOptions;
import jblockd.nbd.proto.Nbd;

/**
 * What the nbd driver sends by what the server offers (block/nbd.c, block/io.c), against a
 * scripted server on a real socket that records every request: a minimal server (no structured
 * replies, no WRITE_ZEROES, TRIM or FUA, 64 KiB maximum block) and a full one.
 */
class NbdDriverFlagsTest {
    private static final int MAX_BLOCK = 64 * 1024;

    @TempDir
    Path dir;

    /** One request the server saw. */
    record Seen(int type, int flags, long offset, long length) {
    }

    private final List<Seen> seen = new CopyOnWriteArrayList<>();
    private NbdDriver driver;

    @AfterEach
    void close() {
        if (driver != null) {
            driver.close();
        }
    }

    /** Serves one client: handshake with {@code transmissionFlags}, then simple replies; memory of 1 MiB. */
    private NbdDriver open(int transmissionFlags, boolean structured) throws Exception {
        Path sock = dir.resolve("s.sock");
        ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        server.bind(UnixDomainSocketAddress.of(sock));
        byte[] disk = new byte[1 << 20];
        Thread.ofVirtual().start(() -> {
            try (server; SocketChannel ch = server.accept()) {
                handshake(ch, transmissionFlags, structured);
                while (true) {
                    ByteBuffer h = read(ch, 28);
                    h.getInt();
                    int flags = h.getShort();
                    int type = h.getShort();
                    long handle = h.getLong();
                    long offset = h.getLong();
                    int length = h.getInt();
                    if (type == Nbd.CMD_DISC) {
                        return;
                    }
                    seen.add(new Seen(type, flags, offset, length));
                    ByteBuffer reply = ByteBuffer.allocate(16).putInt(Nbd.SIMPLE_REPLY_MAGIC).putInt(0).putLong(handle);
                    if (type == Nbd.CMD_WRITE) {
                        read(ch, length).get(disk, (int) offset, length);
                        write(ch, reply.flip());
                    } else if (type == Nbd.CMD_READ) {
                        write(ch, reply.flip());
                        write(ch, ByteBuffer.wrap(disk, (int) offset, length));
                    } else {
                        write(ch, reply.flip());
                    }
                }
            } catch (IOException e) {
                // the client went away
            }
        });
        BlockdevOptions.Nbd o = new BlockdevOptions.Nbd(BlockdevOptions.Common.defaults(),
                new BlockdevOptions.NbdServer.Unix(sock.toString()), "e", null, null, 0, 0, null);
        driver = NbdDriver.open(o, NbdTimer.SYSTEM);
        return driver;
    }

    private static void handshake(SocketChannel ch, int transmissionFlags, boolean structured) throws IOException {
        write(ch, ByteBuffer.allocate(18).putLong(Nbd.NBDMAGIC).putLong(Nbd.IHAVEOPT)
                .putShort((short) (Nbd.FLAG_FIXED_NEWSTYLE | Nbd.FLAG_NO_ZEROES)).flip());
        read(ch, 4);
        while (true) {
            ByteBuffer o = read(ch, 16);
            o.getLong();
            int option = o.getInt();
            read(ch, o.getInt());
            if (option == Nbd.OPT_GO) {
                reply(ch, option, Nbd.REP_INFO, ByteBuffer.allocate(12).putShort((short) Nbd.INFO_EXPORT)
                        .putLong(1 << 20).putShort((short) (Nbd.FLAG_HAS_FLAGS | transmissionFlags)).flip());
                reply(ch, option, Nbd.REP_INFO, ByteBuffer.allocate(14).putShort((short) Nbd.INFO_BLOCK_SIZE)
                        .putInt(512).putInt(4096).putInt(MAX_BLOCK).flip());
                reply(ch, option, Nbd.REP_ACK, ByteBuffer.allocate(0));
                return;
            }
            boolean ack = option == Nbd.OPT_STRUCTURED_REPLY ? structured : option == Nbd.OPT_SET_META_CONTEXT;
            reply(ch, option, ack ? Nbd.REP_ACK : Nbd.REP_ERR_UNSUP, ByteBuffer.allocate(0));
        }
    }

    private static void reply(SocketChannel ch, int option, int type, ByteBuffer data) throws IOException {
        write(ch, ByteBuffer.allocate(20 + data.remaining()).putLong(Nbd.OPT_REPLY_MAGIC).putInt(option).putInt(type)
                .putInt(data.remaining()).put(data).flip());
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
    void aMinimalServerGetsSplitWritesZeroBuffersAndFlushInsteadOfFua() throws Exception {
        NbdDriver d = open(Nbd.FLAG_SEND_FLUSH, false);
        assertThat(d.capabilities().canWriteZeroes()).isFalse();
        assertThat(d.capabilities().canFua()).isFalse();
        assertThat(d.capabilities().canDiscard()).isFalse();
        assertThat(d.capabilities().requestAlignment()).isEqualTo(512);
        // no structured replies, no base:allocation: everything is data
        assertThat(d.status(0, 1 << 20).allocation()).isEqualTo(Allocation.DATA);
        assertThat(d.status(0, 1 << 20).length()).isEqualTo(1 << 20);

        byte[] data = new byte[200 * 1024];
        java.util.Arrays.fill(data, (byte) 0x5a);
        d.write(4096, ByteBuffer.wrap(data), true);
        assertThat(seen).containsExactly(new Seen(Nbd.CMD_WRITE, 0, 4096, MAX_BLOCK),
                new Seen(Nbd.CMD_WRITE, 0, 4096 + MAX_BLOCK, MAX_BLOCK),
                new Seen(Nbd.CMD_WRITE, 0, 4096 + 2L * MAX_BLOCK, MAX_BLOCK),
                new Seen(Nbd.CMD_WRITE, 0, 4096 + 3L * MAX_BLOCK, 200 * 1024 - 3 * MAX_BLOCK),
                new Seen(Nbd.CMD_FLUSH, 0, 0, 0));
        seen.clear();

        d.writeZeroes(8192, 100 * 1024, true); // no WRITE_ZEROES: zero-filled writes
        assertThat(seen).containsExactly(new Seen(Nbd.CMD_WRITE, 0, 8192, MAX_BLOCK),
                new Seen(Nbd.CMD_WRITE, 0, 8192 + MAX_BLOCK, 100 * 1024 - MAX_BLOCK));
        ByteBuffer back = ByteBuffer.allocate(200 * 1024);
        d.read(4096, back);
        assertThat(back.array()[4096]).isZero();
        assertThat(back.array()[0]).isEqualTo((byte) 0x5a);
        assertThat(back.array()[4096 + 100 * 1024]).isEqualTo((byte) 0x5a);
        seen.clear();

        d.discard(0, 4096); // no TRIM: nothing sent
        assertThat(seen).isEmpty();
    }

    @Test
    void aFullServerGetsFuaWriteZeroesWithAndWithoutNoHoleAndTrim() throws Exception {
        NbdDriver d = open(Nbd.FLAG_SEND_FLUSH | Nbd.FLAG_SEND_FUA | Nbd.FLAG_SEND_WRITE_ZEROES | Nbd.FLAG_SEND_TRIM,
                true);
        d.write(0, ByteBuffer.allocate(4096), true);
        d.writeZeroes(4096, 1 << 19, false);
        d.writeZeroes(4096, 4096, true);
        d.discard(0, 8192);
        d.flush();
        assertThat(seen).containsExactly(new Seen(Nbd.CMD_WRITE, Nbd.CMD_FLAG_FUA, 0, 4096),
                new Seen(Nbd.CMD_WRITE_ZEROES, Nbd.CMD_FLAG_NO_HOLE, 4096, 1 << 19),
                new Seen(Nbd.CMD_WRITE_ZEROES, 0, 4096, 4096),
                new Seen(Nbd.CMD_TRIM, 0, 0, 8192),
                new Seen(Nbd.CMD_FLUSH, 0, 0, 0));
    }
}
