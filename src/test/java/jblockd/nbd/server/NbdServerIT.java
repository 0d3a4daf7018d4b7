package jblockd.nbd.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.Allocation;
import jblockd.block.BlockNode;
import jblockd.block.Errno;
import jblockd.block.file.FileDriver;
import jblockd.device.Device;
import jblockd.device.GuestIo;
import jblockd.device.RunState;
import jblockd.nbd.proto.Nbd;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.IoStatus;
import jblockd.qapi.RunStatus;

/** The NBD server in this JVM, driven by real clients (qemu-io, qemu-img, nbdinfo, nbdcopy). */
class NbdServerIT {
    @TempDir
    Path dir;

    private final RecordingEvents events = new RecordingEvents();
    private NbdServer server;
    private RunState runState;
    private Path sock;
    private Device device;

    @BeforeEach
    void setUp() throws IOException {
        assumeTrue(Tools.present("qemu-io"), "qemu-io not installed");
        server = new NbdServer();
        sock = dir.resolve("nbd.sock");
        server.start(UnixDomainSocketAddress.of(sock), 0);
        runState = new RunState(events, () -> {
            if (device != null) {
                device.setIoStatus(IoStatus.OK);
            }
        });
    }

    @AfterEach
    void tearDown() {
        if (runState != null && !runState.running()) {
            runState.cont();
        }
        if (server != null) {
            server.stop();
        }
    }

    private BlockNode fileNode(Path img, int size) throws IOException {
        try (var ch = java.nio.channels.FileChannel.open(img, java.nio.file.StandardOpenOption.CREATE,
                java.nio.file.StandardOpenOption.WRITE)) {
            ch.truncate(0);
            ch.write(ByteBuffer.allocate(1), size - 1);
        }
        return new BlockNode("file0", false, FileDriver.open(img, false), false);
    }

    private NbdExport export(String name, BlockNode node, boolean writable, String description) throws IOException {
        device = new Device("drive0", node, BlockdevOnError.REPORT, BlockdevOnError.ENOSPC);
        NbdExport e = new NbdExport(name, name, description, writable, new GuestIo(device, runState, events));
        server.addExport(e);
        return e;
    }

    private String uri(String name) {
        return "nbd+unix:///" + name + "?socket=" + sock;
    }

    private Tools.Result qemuIo(String name, String... cmds) throws Exception {
        var cmd = new java.util.ArrayList<>(java.util.List.of("qemu-io", "-f", "raw"));
        for (String c : cmds) {
            cmd.add("-c");
            cmd.add(c);
        }
        cmd.add(uri(name));
        return Tools.run(30, cmd);
    }

    @Test
    void qemuIoWritesAndReadsPatternsOverUnixAndTcp() throws Exception {
        Path img = dir.resolve("a.raw");
        export("exp1", fileNode(img, 4 << 20), true, null);
        Tools.Result w = qemuIo("exp1", "write -P 0xab 0 64k", "write -P 0xcd 1M 128k", "write -z 2M 64k");
        assertThat(w.exit()).as(w.all()).isZero();
        Tools.Result r = qemuIo("exp1", "read -P 0xab 0 64k", "read -P 0xcd 1M 128k", "read -P 0 2M 64k");
        assertThat(r.exit()).as(r.all()).isZero();
        assertThat(r.all()).doesNotContain("Pattern verification failed");
        byte[] disk = Files.readAllBytes(img);
        assertThat(disk[0]).isEqualTo((byte) 0xab);
        assertThat(disk[(1 << 20) + 131071]).isEqualTo((byte) 0xcd);

        // the same export over TCP, on a second server
        NbdServer tcp = new NbdServer();
        try {
            tcp.start(new InetSocketAddress("127.0.0.1", 0), 0);
            tcp.addExport(server.export("exp1").orElseThrow());
            int port = ((InetSocketAddress) tcp.localAddress()).getPort();
            Tools.Result t = Tools.run(30, "qemu-io", "-f", "raw", "-c", "read -P 0xcd 1M 128k",
                    "-c", "write -P 0x11 3M 4k", "nbd://127.0.0.1:" + port + "/exp1");
            assertThat(t.exit()).as(t.all()).isZero();
            assertThat(t.all()).doesNotContain("Pattern verification failed");
            assertThat(Files.readAllBytes(img)[3 << 20]).isEqualTo((byte) 0x11);
        } finally {
            tcp.stop();
        }
    }

    @Test
    void nbdinfoListShowsExportNamesAndDescriptions() throws Exception {
        assumeTrue(Tools.present("nbdinfo"));
        export("exp1", fileNode(dir.resolve("a.raw"), 1 << 20), true, "first disk");
        server.addExport(new NbdExport("exp2", "exp2", null, false,
                new GuestIo(device, runState, events)));
        Tools.Result r = Tools.run(30, "nbdinfo", "--list", "--json", "nbd+unix://?socket=" + sock);
        assertThat(r.exit()).as(r.all()).isZero();
        assertThat(r.out()).contains("\"export-name\": \"exp1\"", "\"description\": \"first disk\"",
                "\"export-name\": \"exp2\"", "\"export-size\": 1048576", "\"can_multi_conn\": true",
                "\"is_read_only\": true", "\"block_size_maximum\": 33554432", "\"block_size_preferred\": 4096");
    }

    @Test
    void nbdinfoMapFollowsTheBackingChain() throws Exception {
        assumeTrue(Tools.present("nbdinfo"));
        MemDriver base = new MemDriver(8 * MemDriver.BLOCK, null);
        base.set(1, Allocation.DATA, (byte) 0x55);
        base.set(2, Allocation.DATA, (byte) 0x66);
        BlockNode baseNode = new BlockNode("base", false, base, true);
        MemDriver top = new MemDriver(8 * MemDriver.BLOCK, baseNode);
        top.set(0, Allocation.DATA, (byte) 0x77);
        top.set(2, Allocation.ZERO, (byte) 0);
        top.set(5, Allocation.DATA, (byte) 0x00);
        export("chain", new BlockNode("top", false, top, false), true, null);
        Tools.Result r = Tools.run(30, "nbdinfo", "--map", uri("chain"));
        assertThat(r.exit()).as(r.all()).isZero();
        // block 0 top data, 1 base data, 2 zero in top, 3-4 nothing, 5 data, 6-7 nothing
        String map = r.out().lines().map(l -> l.trim().replaceAll("[ \t]+", " "))
                .collect(java.util.stream.Collectors.joining("\n"));
        assertThat(map).isEqualTo(String.join("\n",
                "0 131072 0 data",
                "131072 196608 3 hole,zero",
                "327680 65536 0 data",
                "393216 131072 3 hole,zero"));
        // reads: data, holes through structured OFFSET_HOLE, backing data
        Tools.Result q = qemuIo("chain", "read -P 0x77 0 64k", "read -P 0x55 64k 64k", "read -P 0 128k 192k",
                "read -P 0 320k 64k");
        assertThat(q.exit()).as(q.all()).isZero();
        assertThat(q.all()).doesNotContain("Pattern verification failed");
    }

    @Test
    void readOnlyExportRefusesWrites() throws Exception {
        Path img = dir.resolve("ro.raw");
        export("ro", fileNode(img, 1 << 20), false, null);
        Tools.Result w = Tools.run(30, "qemu-io", "-r", "-f", "raw", "-c", "read -P 0 0 4k", uri("ro"));
        assertThat(w.exit()).as(w.all()).isZero();
        // qemu-io opens it read-write on request: the open refuses (the export says READ_ONLY)
        Tools.Result x = qemuIo("ro", "write -P 0x22 0 4k");
        assertThat(x.exit()).isNotZero();
        assertThat(x.all()).contains("Permission denied");
        // a raw client that writes anyway gets EPERM
        try (RawClient c = new RawClient(sock)) {
            c.handshakeGo("ro", false);
            c.request(0, Nbd.CMD_WRITE, 7, 0, new byte[512]);
            assertThat(c.simpleReplyError(7)).isEqualTo(1);
        }
        assertThat(Files.readAllBytes(img)[0]).isZero();
    }

    @Test
    void optionRepliesMatchQemuNbd() throws Exception {
        export("exp1", fileNode(dir.resolve("o.raw"), 1 << 20), true, null);
        try (RawClient c = new RawClient(sock)) {
            c.greeting();
            c.option(99, new byte[0]);
            RawClient.OptReply u = c.optReply();
            assertThat(u.type()).isEqualTo(Nbd.REP_ERR_UNSUP);
            assertThat(u.text()).isEqualTo("Unsupported option 99 (<unknown>)");
            c.option(Nbd.OPT_STRUCTURED_REPLY, new byte[0]);
            assertThat(c.optReply().type()).isEqualTo(Nbd.REP_ACK);
            c.option(Nbd.OPT_STRUCTURED_REPLY, new byte[0]);
            RawClient.OptReply again = c.optReply();
            assertThat(again.type()).isEqualTo(Nbd.REP_ERR_INVALID);
            assertThat(again.text()).isEqualTo("structured reply already negotiated");
            c.option(Nbd.OPT_GO, RawClient.goPayload("bad"));
            RawClient.OptReply bad = c.optReply();
            assertThat(bad.type()).isEqualTo(Nbd.REP_ERR_UNKNOWN);
            assertThat(bad.text()).isEqualTo("export 'bad' not present");
            c.option(Nbd.OPT_GO, RawClient.goPayload("exp1"));
            // NAME was not asked: BLOCK_SIZE, EXPORT, ACK
            RawClient.OptReply bs = c.optReply();
            assertThat(bs.type()).isEqualTo(Nbd.REP_INFO);
            assertThat(ByteBuffer.wrap(bs.data()).getShort()).isEqualTo((short) Nbd.INFO_BLOCK_SIZE);
            RawClient.OptReply ex = c.optReply();
            ByteBuffer eb = ByteBuffer.wrap(ex.data());
            assertThat(eb.getShort()).isZero();
            assertThat(eb.getLong()).isEqualTo(1 << 20);
            assertThat(eb.getShort() & 0xffff).isEqualTo(0xded); // qemu's 0xced | CAN_MULTI_CONN
            assertThat(c.optReply().type()).isEqualTo(Nbd.REP_ACK);
            // READ past the end: structured ERROR with QEMU's text
            c.request(0, Nbd.CMD_READ, 5, 1 << 20, 4096);
            RawClient.Chunk err = c.chunk();
            assertThat(err.type()).isEqualTo(Nbd.REPLY_TYPE_ERROR);
            assertThat(err.errno()).isEqualTo(22);
            assertThat(err.message()).isEqualTo("Operation past EOF; From: 1048576, Len: 4096, Size: 1048576");
            // a read of a hole of the sparse file: one OFFSET_HOLE chunk with DONE (qemu-nbd too)
            c.request(0, Nbd.CMD_READ, 6, 0, 4096);
            RawClient.Chunk d = c.chunk();
            assertThat(d.type()).isEqualTo(Nbd.REPLY_TYPE_OFFSET_HOLE);
            assertThat(d.flags() & Nbd.REPLY_FLAG_DONE).isEqualTo(1);
            // a successful write gets a SIMPLE reply although structured replies are on
            c.request(Nbd.CMD_FLAG_FUA, Nbd.CMD_WRITE, 8, 0, new byte[4096]);
            assertThat(c.simpleReplyError(8)).isZero();
            // a WRITE past the end: ENOSPC like QEMU (the payload is read, the connection stays)
            c.request(0, Nbd.CMD_WRITE, 10, (1 << 20) - 256, new byte[512]);
            RawClient.Chunk nospc = c.chunk();
            assertThat(nospc.errno()).isEqualTo(28);
            assertThat(nospc.message()).isEqualTo("Operation past EOF; From: 1048320, Len: 512, Size: 1048576");
            c.request(Nbd.CMD_FLAG_REQ_ONE, Nbd.CMD_READ, 11, 0, 512);
            RawClient.Chunk flags = c.chunk();
            assertThat(flags.errno()).isEqualTo(22);
            assertThat(flags.message()).isEqualTo("unsupported flags for command read (got 0x8)");
            // too large a WRITE: EINVAL, then the server hangs up
            c.request(0, Nbd.CMD_WRITE, 9, 0, (64L << 20));
            RawClient.Chunk big = c.chunk();
            assertThat(big.errno()).isEqualTo(22);
            assertThat(c.atEof()).isTrue();
        }
    }

    /**
     * GO payloads that do not add up, with the replies qemu-nbd 7.2 gave to the same bytes (probed
     * side by side): nbd_negotiate_handle_info's checks in its order, and an unknown name echoed
     * cut to 80 bytes. One difference on purpose: bytes of a name that are not UTF-8 come back
     * as U+FFFD (QEMU echoes them raw, and an NBD string must be UTF-8).
     */
    @Test
    void malformedGoPayloadsGetQemuNbdsRepliesAndTheConnectionGoesOn() throws Exception {
        export("exp1", fileNode(dir.resolve("g.raw"), 1 << 20), true, null);
        byte[] longName = new byte[100];
        Arrays.fill(longName, (byte) 'x');
        Object[][] cases = {
            {go(nameField("ex\0p1".getBytes(StandardCharsets.UTF_8)), 0, 0), Nbd.REP_ERR_INVALID,
                "Unexpected embedded NUL in option go"},
            {ByteBuffer.allocate(6).putInt(10).put((byte) 'a').put((byte) 'b').array(), Nbd.REP_ERR_INVALID,
                "Inconsistent lengths in option go"},
            {nameField("exp1".getBytes(StandardCharsets.UTF_8)), Nbd.REP_ERR_INVALID,
                "Inconsistent lengths in option go"},
            {go(nameField("exp1".getBytes(StandardCharsets.UTF_8)), 0, 2, 0), Nbd.REP_ERR_INVALID,
                "Inconsistent lengths in option go"},
            {go(nameField("exp1".getBytes(StandardCharsets.UTF_8)), 0, 0, 'x', 'y', 'z'), Nbd.REP_ERR_INVALID,
                "option 'go' has unexpected length"},
            {go(ByteBuffer.allocate(4 + 5000).putInt(5000).array(), 0, 0), Nbd.REP_ERR_INVALID,
                "Invalid name length: 5000"},
            {go(nameField(longName), 0, 0), Nbd.REP_ERR_UNKNOWN,
                "export '" + "x".repeat(80) + "...' not present"},
            {go(nameField(new byte[] {(byte) 0xff, (byte) 0xfe, 1}), 0, 0), Nbd.REP_ERR_UNKNOWN,
                "export '\ufffd\ufffd\u0001' not present"},
        };
        try (RawClient c = new RawClient(sock)) {
            c.greeting();
            for (Object[] k : cases) {
                c.option(Nbd.OPT_GO, (byte[]) k[0]);
                RawClient.OptReply r = c.optReply();
                assertThat(r.type()).as("%s", k[2]).isEqualTo((int) k[1]);
                assertThat(r.text()).isEqualTo((String) k[2]);
            }
            c.option(Nbd.OPT_GO, RawClient.goPayload("exp1"));
            while (c.optReply().type() != Nbd.REP_ACK) {
                // info replies
            }
        }
    }

    private static byte[] nameField(byte[] name) {
        return ByteBuffer.allocate(4 + name.length).putInt(name.length).put(name).array();
    }

    /** {@code head} followed by the given bytes (the u16 request count, requests, anything). */
    private static byte[] go(byte[] head, int... tail) {
        ByteBuffer b = ByteBuffer.allocate(head.length + tail.length).put(head);
        for (int t : tail) {
            b.put((byte) t);
        }
        return b.array();
    }

    @Test
    void structuredReadsSendHolesAndBlockStatusHonoursReqOne() throws Exception {
        MemDriver mem = new MemDriver(4 * MemDriver.BLOCK, null);
        mem.set(0, Allocation.DATA, (byte) 0x61);
        mem.set(2, Allocation.DATA, (byte) 0x62);
        export("m", new BlockNode("mem0", false, mem, false), true, null);
        try (RawClient c = new RawClient(sock)) {
            c.greeting();
            c.option(Nbd.OPT_STRUCTURED_REPLY, new byte[0]);
            assertThat(c.optReply().type()).isEqualTo(Nbd.REP_ACK);
            byte[] q = "base:".getBytes(StandardCharsets.UTF_8);
            c.option(Nbd.OPT_LIST_META_CONTEXT, ByteBuffer.allocate(4 + 1 + 4 + 4 + q.length).putInt(1)
                    .put((byte) 'm').putInt(1).putInt(q.length).put(q).array());
            RawClient.OptReply listed = c.optReply();
            assertThat(listed.type()).isEqualTo(Nbd.REP_META_CONTEXT);
            assertThat(new String(listed.data(), 4, listed.data().length - 4, StandardCharsets.UTF_8))
                    .isEqualTo("base:allocation");
            assertThat(c.optReply().type()).isEqualTo(Nbd.REP_ACK);
            byte[] ba = Nbd.BASE_ALLOCATION.getBytes(StandardCharsets.UTF_8);
            c.option(Nbd.OPT_SET_META_CONTEXT, ByteBuffer.allocate(4 + 1 + 4 + 4 + ba.length).putInt(1)
                    .put((byte) 'm').putInt(1).putInt(ba.length).put(ba).array());
            assertThat(ByteBuffer.wrap(c.optReply().data()).getInt()).isZero(); // context id 0
            assertThat(c.optReply().type()).isEqualTo(Nbd.REP_ACK);
            c.option(Nbd.OPT_GO, RawClient.goPayload("m"));
            while (c.optReply().type() != Nbd.REP_ACK) {
                // info
            }
            c.request(0, Nbd.CMD_BLOCK_STATUS, 1, 0, 4 * MemDriver.BLOCK);
            RawClient.Chunk bs = c.chunk();
            assertThat(bs.type()).isEqualTo(Nbd.REPLY_TYPE_BLOCK_STATUS);
            ByteBuffer b = ByteBuffer.wrap(bs.payload());
            assertThat(b.getInt()).isZero();
            int[] ext = new int[(bs.payload().length - 4) / 4];
            for (int i = 0; i < ext.length; i++) {
                ext[i] = b.getInt();
            }
            assertThat(ext).containsExactly(65536, 0, 65536, 3, 65536, 0, 65536, 3);
            c.request(Nbd.CMD_FLAG_REQ_ONE, Nbd.CMD_BLOCK_STATUS, 2, 0, 4 * MemDriver.BLOCK);
            assertThat(c.chunk().payload()).hasSize(12);
            // READ 32K..160K: data, hole, data
            c.request(0, Nbd.CMD_READ, 3, 32768, 131072);
            RawClient.Chunk c1 = c.chunk();
            RawClient.Chunk c2 = c.chunk();
            RawClient.Chunk c3 = c.chunk();
            assertThat(new int[] {c1.type(), c2.type(), c3.type()}).containsExactly(Nbd.REPLY_TYPE_OFFSET_DATA,
                    Nbd.REPLY_TYPE_OFFSET_HOLE, Nbd.REPLY_TYPE_OFFSET_DATA);
            assertThat(c3.flags() & Nbd.REPLY_FLAG_DONE).isEqualTo(1);
            assertThat(c1.flags() & Nbd.REPLY_FLAG_DONE).isZero();
            assertThat(ByteBuffer.wrap(c2.payload()).getLong()).isEqualTo(65536);
            assertThat(ByteBuffer.wrap(c2.payload(), 8, 4).getInt()).isEqualTo(65536);
            assertThat(c1.payload()[8]).isEqualTo((byte) 0x61);
            assertThat(c3.payload()).hasSize(8 + 32768);
            // with DF: one data chunk, zeroes included
            c.request(Nbd.CMD_FLAG_DF, Nbd.CMD_READ, 4, 32768, 131072);
            RawClient.Chunk df = c.chunk();
            assertThat(df.type()).isEqualTo(Nbd.REPLY_TYPE_OFFSET_DATA);
            assertThat(df.payload()).hasSize(8 + 131072);
            assertThat(df.payload()[8 + 65536]).isZero();
            assertThat(df.flags() & Nbd.REPLY_FLAG_DONE).isEqualTo(1);
        }
        try (RawClient c = new RawClient(sock)) {
            c.handshakeGo("m", false);
            // no structured replies (the Linux kernel client): BLOCK_STATUS is EINVAL, READ simple
            c.request(0, Nbd.CMD_BLOCK_STATUS, 5, 0, 4096);
            assertThat(c.simpleReplyError(5)).isEqualTo(22);
            c.request(0, Nbd.CMD_READ, 6, 131072, 4);
            assertThat(c.simpleReplyError(6)).isZero();
            assertThat(c.readBytes(4)).containsExactly(0x62, 0x62, 0x62, 0x62);
        }
    }

    @Test
    void werrorStopHoldsTheFailedWriteUntilCont() throws Exception {
        MemDriver mem = new MemDriver(16 * MemDriver.BLOCK, null);
        BlockNode node = new BlockNode("mem0", false, mem, false);
        device = new Device("drive0", node, BlockdevOnError.REPORT, BlockdevOnError.STOP);
        server.addExport(new NbdExport("e", "e", null, true, new GuestIo(device, runState, events)));
        mem.failWrites = Errno.EIO;
        mem.failCount = 1;
        CompletableFuture<Tools.Result> writer = CompletableFuture.supplyAsync(() -> {
            try {
                return qemuIo("e", "write -P 0x5a 64k 64k");
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (runState.status() != RunStatus.IO_ERROR && System.nanoTime() < deadline) {
            Thread.sleep(20);
        }
        assertThat(runState.status()).isEqualTo(RunStatus.IO_ERROR);
        assertThat(device.ioStatus()).isEqualTo(IoStatus.FAILED);
        assertThat(events.events).containsExactly(
                "BLOCK_IO_ERROR drive0 mem0 write stop false Input/output error", "STOP");
        Thread.sleep(200);
        assertThat(writer).isNotDone();
        runState.cont();
        Tools.Result w = writer.get(30, TimeUnit.SECONDS);
        assertThat(w.exit()).as(w.all()).isZero();
        assertThat(w.all()).doesNotContain("error");
        assertThat(events.events).containsExactly(
                "BLOCK_IO_ERROR drive0 mem0 write stop false Input/output error", "STOP", "RESUME");
        assertThat(device.ioStatus()).isEqualTo(IoStatus.OK);
        Tools.Result r = qemuIo("e", "read -P 0x5a 64k 64k");
        assertThat(r.all()).doesNotContain("Pattern verification failed");
    }

    @Test
    void manualStopHoldsReadsAndContReleasesThem() throws Exception {
        export("s", fileNode(dir.resolve("s.raw"), 1 << 20), true, null);
        runState.stop();
        assertThat(runState.status()).isEqualTo(RunStatus.PAUSED);
        CompletableFuture<Tools.Result> reader = CompletableFuture.supplyAsync(() -> {
            try {
                return qemuIo("s", "read -P 0 0 4k");
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        Thread.sleep(1000);
        assertThat(reader).isNotDone();
        runState.stop(); // already stopped: no second event
        runState.cont();
        Tools.Result r = reader.get(30, TimeUnit.SECONDS);
        assertThat(r.exit()).as(r.all()).isZero();
        assertThat(events.events).containsExactly("STOP", "RESUME");
    }

    @Test
    void rerrorReportAndIgnore() throws Exception {
        MemDriver mem = new MemDriver(4 * MemDriver.BLOCK, null);
        mem.set(0, Allocation.DATA, (byte) 0x42);
        BlockNode node = new BlockNode("mem0", false, mem, false);
        device = new Device("drive0", node, BlockdevOnError.REPORT, BlockdevOnError.REPORT);
        server.addExport(new NbdExport("e", "e", null, true, new GuestIo(device, runState, events)));
        mem.failReads = Errno.EIO;
        mem.failCount = 1;
        Tools.Result r = qemuIo("e", "read -P 0x42 0 4k");
        assertThat(r.all()).contains("Input/output error");
        assertThat(runState.status()).isEqualTo(RunStatus.RUNNING);
        assertThat(events.events).containsExactly("BLOCK_IO_ERROR drive0 mem0 read report null Input/output error");
        events.events.clear();

        device = new Device("drive1", node, BlockdevOnError.IGNORE, BlockdevOnError.REPORT);
        server.addExport(new NbdExport("i", "i", null, true, new GuestIo(device, runState, events)));
        mem.failCount = 1;
        Tools.Result ig = qemuIo("i", "read 0 4k");
        assertThat(ig.exit()).as(ig.all()).isZero();
        assertThat(ig.all()).doesNotContain("error");
        assertThat(events.events).containsExactly("BLOCK_IO_ERROR drive1 mem0 read ignore false Input/output error");
    }

    @Test
    void nbdcopyBothWaysWithFourConnections() throws Exception {
        assumeTrue(Tools.present("nbdcopy"));
        Path img = dir.resolve("c.raw");
        export("c", fileNode(img, 8 << 20), true, null);
        Path src = dir.resolve("src.raw");
        byte[] content = new byte[8 << 20];
        new java.util.Random(42).nextBytes(content);
        Files.write(src, content);
        Tools.Result in = Tools.run(60, "nbdcopy", "--connections=4", src.toString(), uri("c"));
        assertThat(in.exit()).as(in.all()).isZero();
        assertThat(Arrays.equals(Files.readAllBytes(img), content)).isTrue();
        Path back = dir.resolve("back.raw");
        Tools.Result out = Tools.run(60, "nbdcopy", "--connections=4", uri("c"), back.toString());
        assertThat(out.exit()).as(out.all()).isZero();
        assertThat(Arrays.equals(Files.readAllBytes(back), content)).isTrue();
    }

    @Test
    void killingOneClientMidRequestLeavesTheOtherIntact() throws Exception {
        Path img = dir.resolve("k.raw");
        export("k", fileNode(img, 16 << 20), true, null);
        var victimCmd = new java.util.ArrayList<>(java.util.List.of("qemu-io", "-f", "raw"));
        for (int i = 0; i < 400; i++) {
            victimCmd.add("-c");
            victimCmd.add("write -P 0x11 0 4M");
        }
        victimCmd.add(uri("k"));
        Process victim = new ProcessBuilder(victimCmd).redirectErrorStream(true)
                .redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
        try {
            CompletableFuture<Tools.Result> other = CompletableFuture.supplyAsync(() -> {
                try {
                    return qemuIo("k", "write -P 0x22 8M 4M", "write -P 0x33 12M 4M", "flush",
                            "read -P 0x22 8M 4M", "read -P 0x33 12M 4M");
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            Thread.sleep(300);
            assertThat(victim.isAlive()).as("victim still writing when killed").isTrue();
            victim.destroyForcibly(); // SIGKILL, mid-request
            assertThat(victim.waitFor(10, TimeUnit.SECONDS)).isTrue();
            Tools.Result r = other.get(30, TimeUnit.SECONDS);
            assertThat(r.exit()).as(r.all()).isZero();
            assertThat(r.all()).doesNotContain("Pattern verification failed", "error");
        } finally {
            victim.destroyForcibly();
        }
        // the export still serves new clients, and the victim's range holds whole 0x11 or 0 bytes
        Tools.Result again = qemuIo("k", "read -P 0x33 12M 4M");
        assertThat(again.all()).doesNotContain("Pattern verification failed");
        byte[] disk = Files.readAllBytes(img);
        for (int i = 0; i < 8 << 20; i++) {
            if (disk[i] != 0 && disk[i] != 0x11) {
                throw new AssertionError("byte " + i + " is " + disk[i]);
            }
        }
        for (int i = 8 << 20; i < 12 << 20; i++) {
            if (disk[i] != 0x22) {
                throw new AssertionError("byte " + i + " is " + disk[i]);
            }
        }
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (!server.export("k").orElseThrow().connections().isEmpty() && System.nanoTime() < deadline) {
            Thread.sleep(20);
        }
        assertThat(server.export("k").orElseThrow().connections()).isEmpty();
    }

    /**
     * Clients that pipeline big reads and never read the replies leave handlers blocked in
     * socket writes, more of them than the server keeps warm threads: another client's I/O must
     * still be served at once (a fixed pool with a queue would hold it behind the blocked ones).
     */
    @Test
    @Timeout(120) // a hang here must fail the test, not stall the suite
    void clientsThatStopReadingRepliesDelayNobodyElse() throws Exception {
        Path img = dir.resolve("s.raw");
        export("s", fileNode(img, 64 << 20), true, null);
        Tools.Result fill = qemuIo("s", "write -P 0x5a 0 64M");
        assertThat(fill.exit()).as(fill.all()).isZero();
        List<RawClient> stalled = new ArrayList<>();
        List<Thread> senders = new ArrayList<>();
        try {
            for (int c = 0; c < 3; c++) {
                RawClient r = new RawClient(sock);
                stalled.add(r);
                r.handshakeGo("s", false); // simple replies: every READ sends its full 1 MiB
                // Sent from a thread of its own: once the server has as many replies queued as
                // the socket holds it reads no further requests of this client (backpressure, as
                // qemu-nbd does), so the last requests may wait until the replies are read.
                senders.add(Thread.ofVirtual().start(() -> {
                    try {
                        for (int i = 0; i < 64; i++) {
                            r.request(0, Nbd.CMD_READ, i, (long) i << 20, 1 << 20);
                        }
                    } catch (IOException closed) {
                        // the test closed this client
                    }
                }));
            }
            Thread.sleep(500); // the handlers fill the socket buffers and block
            long t0 = System.nanoTime();
            Tools.Result other = qemuIo("s", "write -P 0x44 1M 1M", "flush", "read -P 0x44 1M 1M",
                    "read -P 0x5a 8M 1M");
            long ms = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t0);
            assertThat(other.exit()).as(other.all()).isZero();
            assertThat(other.all()).doesNotContain("Pattern verification failed", "error");
            assertThat(ms).as("the other client was served while the stalled ones hold handlers").isLessThan(10_000);
            // the stalled clients' replies are all there, in full, once they read
            RawClient first = stalled.getFirst();
            java.util.Set<Long> handles = new java.util.TreeSet<>();
            for (int i = 0; i < 64; i++) {
                long handle = first.simpleReplyOk();
                handles.add(handle);
                byte[] data = first.readBytes(1 << 20);
                byte expected = handle == 1 && data[0] == 0x44 ? (byte) 0x44 : (byte) 0x5a; // raced the write
                for (byte b : data) {
                    if (b != expected) {
                        throw new AssertionError("reply " + handle + " holds " + b);
                    }
                }
            }
            assertThat(handles).hasSize(64).contains(0L, 63L);
        } finally {
            for (RawClient r : stalled) {
                r.close();
            }
            for (Thread t : senders) {
                t.join(10_000);
            }
        }
    }

    @Test
    void maxConnectionsHoldsFurtherClientsInTheBacklog() throws Exception {
        server.stop();
        server = new NbdServer();
        server.start(UnixDomainSocketAddress.of(sock), 1);
        export("one", fileNode(dir.resolve("one.raw"), 1 << 20), true, null);
        try (RawClient first = new RawClient(sock)) {
            first.greeting();
            try (SocketChannel second = SocketChannel.open(UnixDomainSocketAddress.of(sock))) {
                second.configureBlocking(false);
                ByteBuffer b = ByteBuffer.allocate(18);
                Thread.sleep(300);
                assertThat(second.read(b)).as("no greeting while the first client is connected").isZero();
                first.close();
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
                while (b.hasRemaining() && System.nanoTime() < deadline) {
                    if (second.read(b) < 0) {
                        break;
                    }
                    Thread.sleep(10);
                }
                assertThat(b.flip().getLong()).isEqualTo(Nbd.NBDMAGIC);
            }
        }
    }

    /** A minimal scripted NBD client on a real socket, for byte-level checks. */
    static final class RawClient implements AutoCloseable {
        record OptReply(int option, int type, byte[] data) {
            String text() {
                return new String(data, StandardCharsets.UTF_8);
            }
        }

        record Chunk(int flags, int type, long handle, byte[] payload) {
            int errno() {
                return ByteBuffer.wrap(payload).getInt();
            }

            String message() {
                ByteBuffer b = ByteBuffer.wrap(payload);
                b.getInt();
                int n = b.getShort();
                return new String(payload, 6, n, StandardCharsets.UTF_8);
            }
        }

        private final SocketChannel ch;
        private final DataInputStream in;
        private final DataOutputStream out;

        RawClient(Path sock) throws IOException {
            this(SocketChannel.open(UnixDomainSocketAddress.of(sock)));
        }

        private RawClient(SocketChannel ch) {
            this.ch = ch;
            in = new DataInputStream(Channels.newInputStream(ch));
            out = new DataOutputStream(Channels.newOutputStream(ch));
        }

        static RawClient tcp(String host, int port) throws IOException {
            return new RawClient(SocketChannel.open(new InetSocketAddress(host, port)));
        }

        void greeting() throws IOException {
            assertThat(in.readLong()).isEqualTo(Nbd.NBDMAGIC);
            assertThat(in.readLong()).isEqualTo(Nbd.IHAVEOPT);
            assertThat(in.readShort()).isEqualTo((short) 3);
            out.writeInt(3);
        }

        static byte[] goPayload(String name) {
            byte[] n = name.getBytes(StandardCharsets.UTF_8);
            return ByteBuffer.allocate(4 + n.length + 2).putInt(n.length).put(n).putShort((short) 0).array();
        }

        void handshakeGo(String name, boolean structured) throws IOException {
            greeting();
            if (structured) {
                option(Nbd.OPT_STRUCTURED_REPLY, new byte[0]);
                assertThat(optReply().type()).isEqualTo(Nbd.REP_ACK);
            }
            option(Nbd.OPT_GO, goPayload(name));
            while (optReply().type() != Nbd.REP_ACK) {
                // info replies
            }
        }

        void option(int opt, byte[] data) throws IOException {
            out.writeLong(Nbd.IHAVEOPT);
            out.writeInt(opt);
            out.writeInt(data.length);
            out.write(data);
            out.flush();
        }

        OptReply optReply() throws IOException {
            assertThat(in.readLong()).isEqualTo(Nbd.OPT_REPLY_MAGIC);
            int opt = in.readInt();
            int type = in.readInt();
            byte[] d = new byte[in.readInt()];
            in.readFully(d);
            return new OptReply(opt, type, d);
        }

        void request(int flags, int type, long handle, long offset, long length) throws IOException {
            out.writeInt(Nbd.REQUEST_MAGIC);
            out.writeShort(flags);
            out.writeShort(type);
            out.writeLong(handle);
            out.writeLong(offset);
            out.writeInt((int) length);
            out.flush();
        }

        void request(int flags, int type, long handle, long offset, byte[] data) throws IOException {
            request(flags, type, handle, offset, data.length);
            out.write(data);
            out.flush();
        }

        int simpleReplyError(long handle) throws IOException {
            assertThat(in.readInt()).isEqualTo(Nbd.SIMPLE_REPLY_MAGIC);
            int err = in.readInt();
            assertThat(in.readLong()).isEqualTo(handle);
            return err;
        }

        /** A successful simple reply's header; returns its handle. */
        long simpleReplyOk() throws IOException {
            assertThat(in.readInt()).isEqualTo(Nbd.SIMPLE_REPLY_MAGIC);
            assertThat(in.readInt()).as("error").isZero();
            return in.readLong();
        }

        Chunk chunk() throws IOException {
            assertThat(in.readInt()).isEqualTo(Nbd.STRUCTURED_REPLY_MAGIC);
            int flags = in.readUnsignedShort();
            int type = in.readUnsignedShort();
            long handle = in.readLong();
            byte[] p = new byte[in.readInt()];
            in.readFully(p);
            return new Chunk(flags, type, handle, p);
        }

        byte[] readBytes(int n) throws IOException {
            byte[] b = new byte[n];
            in.readFully(b);
            return b;
        }

        boolean atEof() throws IOException {
            return in.read() < 0;
        }

        @Override
        public void close() throws IOException {
            ch.close();
        }
    }
}
