package jblockd.it;

import static jblockd.it.Peers.checkQcow2;
import static jblockd.it.Peers.content;
import static jblockd.it.Peers.killNine;
import static jblockd.it.Peers.run;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;


import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/**
 * A guest write through a device or export whose write cache is off is durable when its reply
 * arrives, with no FUA and no flush from the guest, down through every layer: the qcow2 L2 and
 * refcount updates that make a fresh cluster visible are in jblockd's memory until a flush, and
 * are lost by a kill -9; the flush that writes them back reaches the file (a blkdebug rule
 * failing flushes fails the write itself). The same write with the write cache on is not
 * flushed: the control case that shows the checks can tell.
 */
class WritethroughIT {
    private static final int MIB = 1 << 20;

    @TempDir
    Path dir;
    Path nbd;

    @BeforeEach
    void tools() {
        Peers.assumeTools("qemu-img", "qemu-io");
        nbd = dir.resolve("nbd.sock");
    }

    /** How the write cache is turned off ("writeback": it is not). */
    private DaemonProcess daemon(String how, String file) throws Exception {
        String cache = switch (how) {
            case "cache=writethrough", "cache=directsync", "cache=unsafe", "cache=none" -> "," + how;
            default -> "";
        };
        List<String> args = new ArrayList<>(List.of(
                "--drive", "id=drive0,file=" + file + ",format=qcow2" + cache,
                "--nbd-server", "addr.type=unix,addr.path=" + nbd));
        if (!how.equals("qmp writethrough")) {
            args.addAll(List.of("--export", "type=nbd,id=exp0,device=drive0,name=disk,writable=on"
                    + (how.equals("export writethrough=on") ? ",writethrough=on" : "")));
        }
        DaemonProcess d = DaemonProcess.start(dir, args.toArray(String[]::new));
        if (how.equals("qmp writethrough")) {
            try (QmpTestClient c = d.connect()) {
                c.executeOk("block-export-add", Map.of("type", "nbd", "id", "exp0", "device", "drive0",
                        "name", "disk", "writable", true, "writethrough", true));
            }
        }
        return d;
    }

    private Path freshQcow2() throws Exception {
        Path img = dir.resolve("disk.qcow2");
        Files.deleteIfExists(img);
        run("qemu-img", "create", "-f", "qcow2", img.toString(), "8M");
        return img;
    }

    /**
     * An image whose cluster at 1 MiB is allocated already: a write there changes no metadata,
     * so only the write cache decides whether it flushes (an allocating write may flush by
     * itself: qcow2 makes its refcounts durable before an L2 table points at a new cluster).
     */
    private Path allocatedQcow2() throws Exception {
        Path img = freshQcow2();
        run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 1M 64k", img.toString());
        return img;
    }

    private static byte[] pattern() {
        byte[] b = new byte[64 * 1024];
        Arrays.fill(b, (byte) 0x5a);
        return b;
    }

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"cache=writethrough", "cache=directsync", "export writethrough=on", "qmp writethrough"})
    void anAcknowledgedWriteSurvivesKillNine(String how) throws Exception {
        Path img = freshQcow2();
        DaemonProcess d = daemon(how, img.toString());
        try (RawNbdClient guest = new RawNbdClient(nbd, "disk")) {
            guest.write(MIB, pattern(), false); // allocates a cluster: new L2 entry, refcounts
            killNine(d); // at once: the write's reply was the only promise
        } finally {
            d.close();
        }
        checkQcow2(img, true);
        byte[] data = content(img, "qcow2", dir);
        assertThat(Arrays.copyOfRange(data, MIB, MIB + 64 * 1024)).as("the acknowledged write").isEqualTo(pattern());
    }

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"cache=writethrough", "cache=directsync", "export writethrough=on", "qmp writethrough"})
    void aWriteWaitsForItsFlushAndFailsWithIt(String how) throws Exception {
        try (DaemonProcess d = daemon(how, "blkdebug:" + flushFails() + ":" + allocatedQcow2());
             RawNbdClient guest = new RawNbdClient(nbd, "disk")) {
            assertThatThrownBy(() -> guest.write(MIB, pattern(), false))
                    .isInstanceOfSatisfying(RawNbdClient.NbdErrorReply.class, e -> assertThat(e.code).isEqualTo(5));
        }
    }

    /** The control case: with the write cache on, nothing flushes until the guest asks. */
    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"writeback", "cache=none", "cache=unsafe"})
    void withTheWriteCacheOnAWriteIsNotFlushed(String how) throws Exception {
        try (DaemonProcess d = daemon(how, "blkdebug:" + flushFails() + ":" + allocatedQcow2());
             RawNbdClient guest = new RawNbdClient(nbd, "disk")) {
            guest.write(MIB, pattern(), false);
            if (how.equals("cache=unsafe")) {
                guest.flush(); // no-flush: the guest's flush is dropped before it reaches the file
            } else {
                assertThatThrownBy(guest::flush).isInstanceOf(RawNbdClient.NbdErrorReply.class);
            }
        }
    }

    private Path flushFails() throws Exception {
        Path cfg = dir.resolve("flush-fails.cfg");
        Files.writeString(cfg, """
                [inject-error]
                event = "flush_to_disk"
                errno = "5"
                """);
        return cfg;
    }
}
