package jblockd.it;

import static jblockd.it.Peers.checkQcow2;
import static jblockd.it.Peers.content;
import static jblockd.it.Peers.run;
import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import com.fasterxml.jackson.databind.JsonNode;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/**
 * NBD clients that vanish mid-request: one sends a WRITE header and half its payload, then
 * closes; one pipelines 32 FUA writes and closes before reading a reply. Meanwhile a well-behaved
 * client writes and reads back. Its I/O completes and is correct, a half-received write is never
 * applied (NBD doc/proto.md: the request is incomplete, QEMU's nbd_co_receive_request drops it),
 * each pipelined write is applied whole or not at all, and the daemon keeps serving.
 */
class NbdDisconnectIT {
    private static final int MIB = 1 << 20;
    private static final int BLOCK = 64 * 1024;

    @TempDir
    Path dir;

    @BeforeEach
    void tools() {
        Peers.assumeTools("qemu-img", "qemu-io");
    }

    @ParameterizedTest
    @ValueSource(strings = {"raw", "qcow2"})
    void abruptClientsDisturbNobody(String format) throws Exception {
        Path img = dir.resolve("disk." + format);
        Path nbd = dir.resolve("nbd.sock");
        run("qemu-img", "create", "-q", "-f", format, img.toString(), "8M");
        run("qemu-io", "-f", format, "-c", "write -P 0x11 0 8M", img.toString());
        try (DaemonProcess d = DaemonProcess.start(dir,
                "--drive", "id=drive0,file=" + img + ",format=" + format,
                "--nbd-server", "addr.type=unix,addr.path=" + nbd,
                "--export", "type=nbd,id=exp0,device=drive0,name=disk,writable=on");
             QmpTestClient c = d.connect();
             RawNbdClient good = new RawNbdClient(nbd, "disk")) {
            AtomicInteger badDone = new AtomicInteger();
            Thread bad = Thread.ofPlatform().name("bad-clients").start(() -> {
                try {
                    for (int round = 0; round < 10; round++) {
                        // half a 1 MiB write at 4M, then gone
                        try (RawNbdClient h = new RawNbdClient(nbd, "disk")) {
                            byte[] half = new byte[MIB / 2];
                            Arrays.fill(half, (byte) 0xee);
                            h.send(RawNbdClient.CMD_WRITE, 0, 7, 4L * MIB, MIB, null);
                            h.out.write(half);
                            h.out.flush();
                        }
                        // 32 pipelined FUA writes over 6M..8M, closed before any reply is read
                        try (RawNbdClient p = new RawNbdClient(nbd, "disk")) {
                            for (int i = 0; i < 32; i++) {
                                byte[] b = new byte[BLOCK];
                                Arrays.fill(b, (byte) (0x40 + i));
                                p.send(RawNbdClient.CMD_WRITE, RawNbdClient.FLAG_FUA, i, 6L * MIB + (long) i * BLOCK,
                                        BLOCK, b);
                            }
                        }
                        badDone.incrementAndGet();
                    }
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            // the good client keeps working meanwhile, each write read back at once
            int rounds = 0;
            while (bad.isAlive() || rounds < 20) {
                int blk = rounds % 32;
                byte[] b = new byte[BLOCK];
                Arrays.fill(b, (byte) (0x80 + (rounds & 0x3f)));
                good.write((long) blk * BLOCK, b, rounds % 2 == 0);
                assertThat(good.read((long) blk * BLOCK, BLOCK)).isEqualTo(b);
                rounds++;
                assertThat(rounds).as("bad clients never finished").isLessThan(200_000);
            }
            bad.join();
            assertThat(badDone.get()).isEqualTo(10);
            good.flush();
            // the daemon still serves NBD (a new peer) and QMP
            run("qemu-io", "-r", "-f", "raw", "-c", "read -P 0x11 2M 2M", "nbd+unix:///disk?socket=" + nbd);
            assertThat(c.executeOk("query-block").get(0).at("/device").asText()).isEqualTo("drive0");
            assertThat(c.executeOk("query-block-exports")).hasSize(1);
            // the half-sent write at 4M was never applied
            assertThat(good.read(4L * MIB, MIB)).containsOnly((byte) 0x11);
            byte[] pipelined = good.read(6L * MIB, 2 * MIB);
            for (int i = 0; i < 32; i++) {
                byte[] blk = Arrays.copyOfRange(pipelined, i * BLOCK, (i + 1) * BLOCK);
                byte first = blk[0];
                assertThat(first == 0x11 || first == (byte) (0x40 + i)).as("block %d: %02x", i, first).isTrue();
                assertThat(blk).as("pipelined write %d applied whole or not at all", i).containsOnly(first);
            }
            int last = (rounds - 1) % 32;
            byte[] disk = content(img, format, dir);
            for (int blk = 0; blk < 32; blk++) {
                // every good write was acknowledged and then flushed: it is in the image file
                int lastRound = blk <= last ? rounds - 1 - (last - blk) : rounds - 1 - (last + 32 - blk);
                if (lastRound >= 0) {
                    assertThat(disk[blk * BLOCK]).as("block %d", blk).isEqualTo((byte) (0x80 + (lastRound & 0x3f)));
                }
            }
        }
        if (format.equals("qcow2")) {
            checkQcow2(img, false);
        }
    }

    /**
     * Requests a hostile client can send: a read past the end, a read and a write claiming
     * about 4 GiB (more than any buffer the server should allocate), an unknown command, a bad
     * magic. Each earns an error reply or a closed connection, never an allocation of the
     * claimed size or a dead daemon; a concurrent well-behaved client is unaffected.
     */
    @org.junit.jupiter.api.Test
    void hostileRequestsAreRefusedWithoutHarm() throws Exception {
        Path img = dir.resolve("disk.raw");
        Path nbd = dir.resolve("nbd.sock");
        run("qemu-img", "create", "-q", "-f", "raw", img.toString(), "8M");
        run("qemu-io", "-f", "raw", "-c", "write -P 0x11 0 8M", img.toString());
        try (DaemonProcess d = DaemonProcess.start(dir,
                "--drive", "id=drive0,file=" + img + ",format=raw",
                "--nbd-server", "addr.type=unix,addr.path=" + nbd,
                "--export", "type=nbd,id=exp0,device=drive0,name=disk,writable=on");
             QmpTestClient c = d.connect();
             RawNbdClient good = new RawNbdClient(nbd, "disk")) {
            // past the end: EINVAL (22), connection stays usable
            try (RawNbdClient h = new RawNbdClient(nbd, "disk")) {
                RawNbdClient.NbdErrorReply e = org.junit.jupiter.api.Assertions.assertThrows(
                        RawNbdClient.NbdErrorReply.class, () -> h.read(8L * MIB - 512, 4096));
                assertThat(e.code).isEqualTo(22);
                assertThat(h.read(0, 4096)).containsOnly((byte) 0x11);
            }
            // huge claimed lengths, unknown command, bad magic: error reply or disconnect
            int[][] hostile = {{RawNbdClient.CMD_READ, 0xfffff000}, {RawNbdClient.CMD_WRITE, 0xfffff000},
                {42, 4096}};
            for (int[] h : hostile) {
                try (RawNbdClient x = new RawNbdClient(nbd, "disk")) {
                    x.send(h[0], 0, 9, 0, h[1], null);
                    try {
                        x.reply(new byte[0]);
                        org.junit.jupiter.api.Assertions.fail("request " + h[0] + " len " + h[1] + " succeeded");
                    } catch (RawNbdClient.NbdErrorReply expected) {
                        assertThat(expected.code).isNotZero();
                    } catch (java.io.IOException closed) {
                        // the server hung up: allowed for a request it cannot frame
                    }
                }
            }
            try (RawNbdClient x = new RawNbdClient(nbd, "disk")) {
                x.out.writeInt(0xdeadbeef);
                x.out.write(new byte[24]);
                x.out.flush();
                assertThat(x.in.read()).as("bad magic closes the connection").isEqualTo(-1);
            }
            assertThat(good.read(0, 65536)).containsOnly((byte) 0x11);
            run("qemu-io", "-r", "-f", "raw", "-c", "read -P 0x11 0 8M", "nbd+unix:///disk?socket=" + nbd);
            assertThat(c.executeOk("query-block-exports")).hasSize(1);
            assertThat(d.isAlive()).isTrue();
        }
    }

    /**
     * The server side cuts a busy guest off: block-export-del in safe mode is refused while a
     * client is connected; in hard mode the guest is disconnected mid-stream, and every write it
     * was told was durable is in the image; the device, QMP and a re-added export carry on.
     */
    @org.junit.jupiter.api.Test
    void hardRemovalOfABusyExportKeepsEveryDurableWrite() throws Exception {
        Path img = dir.resolve("disk.qcow2");
        Path nbd = dir.resolve("nbd.sock");
        run("qemu-img", "create", "-q", "-f", "qcow2", img.toString(), "4M");
        run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 4M", img.toString());
        byte[] initial = content(img, "qcow2", dir);
        try (DaemonProcess d = DaemonProcess.start(dir,
                "--drive", "id=drive0,file=" + img + ",format=qcow2",
                "--nbd-server", "addr.type=unix,addr.path=" + nbd,
                "--export", "type=nbd,id=exp0,device=drive0,name=disk,writable=on");
             QmpTestClient c = d.connect();
             GuestWriter g = new GuestWriter(nbd, "disk", 7)) {
            long goal = 50;
            while (g.acked() < goal) {
                assertThat(g.ended()).isNull();
                Thread.sleep(5);
            }
            // (QEMU finds nbd-server-remove's name among export ids: block-export-del is the
            // spelling for an export added with its own id)
            JsonNode safe = c.executeError("block-export-del", java.util.Map.of("id", "exp0"));
            assertThat(safe.get("desc").asText()).contains("still in use");
            c.executeOk("block-export-del", java.util.Map.of("id", "exp0", "mode", "hard"));
            // The writer notices the cut on its next request; stopping it first could let it
            // finish an acknowledged write and exit cleanly, so wait for it to fail on its own.
            long deadline = System.nanoTime() + 10_000_000_000L;
            while (g.ended() == null && System.nanoTime() < deadline) {
                Thread.sleep(5);
            }
            assertThat(g.ended()).as("the guest was cut off").isNotNull();
            g.stop();
            assertThat(c.executeOk("query-block-exports")).isEmpty();
            c.executeOk("block-export-add", java.util.Map.of("type", "nbd", "id", "exp1", "node-name",
                    c.executeOk("query-block").get(0).at("/inserted/node-name").asText(), "name", "disk2",
                    "writable", true));
            g.verify(content(img, "qcow2", dir), initial);
            run("qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 64k", "nbd+unix:///disk2?socket=" + nbd);
        }
        checkQcow2(img, false);
        run("qemu-io", "-r", "-f", "qcow2", "-c", "read -P 0x5a 0 64k", img.toString());
    }
}
