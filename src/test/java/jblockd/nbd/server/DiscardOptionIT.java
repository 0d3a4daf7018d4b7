package jblockd.nbd.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import jblockd.testsupport.DaemonProcess;

/**
 * A guest's TRIM honours the node's {@code discard} option as QEMU's block layer does
 * (bdrv_co_pdiscard: "Do nothing if disabled"): with {@code ignore}, QEMU's default, the data
 * stays; with {@code unmap} the range reads as zeroes and the host file gets its space back.
 * Each case runs the same qemu-io sequence through jblockd's export and through qemu-nbd with the
 * same option, and the two must agree on what the guest and the image show afterwards.
 */
class DiscardOptionIT {
    @TempDir
    Path dir;

    @BeforeEach
    void tools() {
        assumeTrue(Tools.present("qemu-io") && Tools.present("qemu-img") && Tools.present("qemu-nbd"),
                "qemu tools not installed");
    }

    /** What a guest and the host see after writing 1 MiB of 0x5a and discarding its first half. */
    record Outcome(boolean guestSeesZeroes, boolean imageHasZeroes, long allocatedBytes) {
    }

    private static void ok(Tools.Result r) {
        assertThat(r.exit()).as(r.all()).isZero();
    }

    /** Runs the guest's sequence; true when the discarded range then reads as zeroes. */
    private static boolean guestSequence(String uri) throws Exception {
        ok(Tools.run(60, "qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 1M", uri));
        ok(Tools.run(60, "qemu-io", "-f", "raw", "-c", "discard 0 512k", "-c", "flush", uri));
        Tools.Result zeroRead = Tools.run(60, "qemu-io", "-f", "raw", "-c", "read -P 0 0 512k", uri);
        boolean guestZero = zeroRead.exit() == 0 && !zeroRead.all().contains("Pattern verification failed");
        boolean guestKept = !Tools.run(60, "qemu-io", "-f", "raw", "-c", "read -P 0x5a 0 512k", uri).all()
                .contains("Pattern verification failed");
        assertThat(guestZero ^ guestKept).as("the discarded range reads as all zeroes or all old data").isTrue();
        return guestZero;
    }

    private static Outcome hostView(boolean guestZero, Path image, String format) throws Exception {
        Tools.Result r = Tools.run(60, "qemu-io", "-r", "-f", format, "-c", "read -P 0 0 512k", image.toString());
        boolean zero = !r.all().contains("Pattern verification failed");
        Tools.Result rest = Tools.run(60, "qemu-io", "-r", "-f", format, "-c", "read -P 0x5a 512k 512k",
                image.toString());
        assertThat(rest.all()).as("the second half is untouched").doesNotContain("Pattern verification failed");
        if (format.equals("qcow2")) {
            Tools.Result check = Tools.run(60, "qemu-img", "check", image.toString());
            assertThat(check.exit()).as(check.all()).isZero();
        }
        return new Outcome(guestZero, zero, allocatedBytes(image));
    }

    private static long allocatedBytes(Path p) throws Exception {
        Tools.Result r = Tools.run(30, "stat", "-c", "%b %B", p.toString());
        String[] f = r.out().trim().split(" ");
        return Long.parseLong(f[0]) * Long.parseLong(f[1]);
    }

    private Path image(String name, String format) throws Exception {
        Path img = dir.resolve(name + "." + format);
        ok(Tools.run(30, "qemu-img", "create", "-f", format, img.toString(), "4M"));
        return img;
    }

    private Outcome viaJblockd(String format, String discard, boolean blockdev) throws Exception {
        Path img = image("j", format);
        Path sock = dir.resolve("j.sock");
        List<String> args = new ArrayList<>();
        if (blockdev) {
            // the inline file child inherits the format node's discard (bdrv_inherited_options)
            args.addAll(List.of("--blockdev", "{\"driver\":\"" + format + "\",\"node-name\":\"drive0\""
                    + (discard == null ? "" : ",\"discard\":\"" + discard + "\"")
                    + ",\"file\":{\"driver\":\"file\",\"filename\":\"" + img + "\"}}"));
        } else {
            args.addAll(List.of("--drive", "id=drive0,file=" + img + ",format=" + format
                    + (discard == null ? "" : ",discard=" + discard)));
        }
        args.addAll(List.of("--nbd-server", "addr.type=unix,addr.path=" + sock,
                "--export", "type=nbd,id=e0,node-name=drive0,name=disk,writable=on"));
        boolean guest;
        try (DaemonProcess d = DaemonProcess.start(dir, args.toArray(String[]::new))) {
            guest = guestSequence("nbd+unix:///disk?socket=" + sock);
        }
        return hostView(guest, img, format);
    }

    private Outcome viaQemuNbd(String format, String discard) throws Exception {
        Path img = image("q", format);
        Path sock = dir.resolve("q.sock");
        List<String> cmd = new ArrayList<>(List.of("qemu-nbd", "-f", format, "-t", "-x", "disk", "-k",
                sock.toString()));
        if (discard != null) {
            cmd.add("--discard=" + discard);
        }
        cmd.add(img.toString());
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        boolean guest;
        try {
            for (int i = 0; i < 200 && !Files.exists(sock); i++) {
                Thread.sleep(25);
            }
            guest = guestSequence("nbd+unix:///disk?socket=" + sock);
        } finally {
            p.destroy();
            p.waitFor(10, TimeUnit.SECONDS);
        }
        return hostView(guest, img, format);
    }

    @ParameterizedTest(name = "{0} discard={1} blockdev={2}")
    @CsvSource(nullValues = "default", value = {
        "raw, default, false", "raw, ignore, false", "raw, unmap, false",
        "qcow2, default, false", "qcow2, unmap, false", "qcow2, unmap, true", "qcow2, ignore, true"})
    void guestTrimFollowsTheDiscardOptionLikeQemuNbd(String format, String discard, boolean blockdev)
            throws Exception {
        Outcome ours = viaJblockd(format, discard, blockdev);
        Outcome qemu = viaQemuNbd(format, discard);
        boolean unmap = "unmap".equals(discard);
        assertThat(ours.guestSeesZeroes()).as("guest view").isEqualTo(qemu.guestSeesZeroes()).isEqualTo(unmap);
        assertThat(ours.imageHasZeroes()).as("image content").isEqualTo(qemu.imageHasZeroes()).isEqualTo(unmap);
        // The host file got space back exactly when QEMU's did (its size in blocks is compared
        // loosely: both keep the same 512 KiB, metadata layouts may differ by a cluster or two).
        boolean oursReleased = ours.allocatedBytes() < (1 << 20);
        boolean qemuReleased = qemu.allocatedBytes() < (1 << 20);
        assertThat(oursReleased).as("host space released (ours %d, qemu-nbd %d bytes allocated)",
                ours.allocatedBytes(), qemu.allocatedBytes()).isEqualTo(qemuReleased);
    }
}
