package jblockd.it;

import static jblockd.it.Peers.run;
import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import com.fasterxml.jackson.databind.JsonNode;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/**
 * The disk image itself fills its (real, tmpfs) filesystem while the guest writes over NBD,
 * with the default werror=enospc (SPEC §5): BLOCK_IO_ERROR (nospace), STOP, the guest's write
 * held (no error reply), query-status io-error; after space is freed, cont retries the held
 * write and the guest goes on. Nothing the guest wrote is lost and the image stays consistent.
 */
class GuestFullDiskIT {
    private static final Duration T = Duration.ofSeconds(30);

    @TempDir
    Path dir;
    Path small;
    boolean mounted;

    @BeforeEach
    void mount() throws Exception {
        Peers.assumeTools("qemu-img", "qemu-io");
        small = dir.resolve("small");
        Peers.mountTmpfs(small, 8);
        mounted = true;
    }

    @AfterEach
    void unmount() throws Exception {
        if (mounted) {
            Peers.unmount(small);
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"raw", "qcow2"})
    void enospcStopsTheGuestAndContRetriesWithoutLoss(String format) throws Exception {
        Path img = small.resolve("disk." + format);
        run("qemu-img", "create", "-q", "-f", format, img.toString(), "6M");
        Path filler = Peers.fill(small.resolve("filler"), 6); // about 2 MiB stay free for a 6 MiB disk
        Path nbd = dir.resolve("nbd.sock");
        try (DaemonProcess d = DaemonProcess.start(dir, "--drive", "id=drive0,file=" + img + ",format=" + format,
                "--nbd-server", "addr.type=unix,addr.path=" + nbd,
                "--export", "type=nbd,id=exp0,device=drive0,name=disk,writable=on");
             QmpTestClient c = d.connect();
             RawNbdClient guest = new RawNbdClient(nbd, "disk")) {
            AtomicInteger written = new AtomicInteger();
            AtomicReference<Throwable> failed = new AtomicReference<>();
            Thread g = Thread.ofPlatform().name("guest").start(() -> {
                try {
                    for (int i = 0; i < 96; i++) { // 6 MiB in 64 KiB FUA writes
                        byte[] b = new byte[65536];
                        Arrays.fill(b, (byte) (i + 1));
                        guest.write((long) i * 65536, b, true);
                        written.incrementAndGet();
                    }
                } catch (Throwable t) {
                    failed.set(t);
                }
            });
            JsonNode ioErr = c.waitEvent("BLOCK_IO_ERROR", T);
            assertThat(ioErr.at("/data/nospace").asBoolean()).isTrue();
            assertThat(ioErr.at("/data/action").asText()).isEqualTo("stop");
            c.waitEvent("STOP", T);
            assertThat(c.executeOk("query-status").get("status").asText()).isEqualTo("io-error");
            int held = written.get();
            Thread.sleep(200);
            assertThat(written.get()).as("the guest is held, not failed").isEqualTo(held);
            assertThat(failed.get()).isNull();
            assertThat(held).isLessThan(96);
            // QMP and the export keep answering while stopped
            assertThat(c.executeOk("query-block").get(0).get("io-status").asText()).isEqualTo("nospace");
            Files.delete(filler);
            c.executeOk("cont");
            c.waitEvent("RESUME", T);
            g.join(T.toMillis());
            assertThat(failed.get()).as("guest error").isNull();
            assertThat(written.get()).isEqualTo(96);
            for (int i = 0; i < 96; i++) {
                assertThat(guest.read((long) i * 65536, 65536)).as("block %d", i).containsOnly((byte) (i + 1));
            }
        }
        if (format.equals("qcow2")) {
            Peers.checkQcow2(img, false);
        }
        byte[] all = Peers.content(img, format, dir);
        for (int i = 0; i < 96; i++) {
            assertThat(Arrays.copyOfRange(all, i * 65536, (i + 1) * 65536)).containsOnly((byte) (i + 1));
        }
    }
}
