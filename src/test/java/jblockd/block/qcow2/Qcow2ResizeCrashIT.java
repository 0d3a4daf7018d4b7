package jblockd.block.qcow2;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.ExternalTools;

/**
 * Power loss during a qcow2 grow (the method of {@link Qcow2CrashIT}): every write of a resize
 * that needs a new L1 table, and of writes before and after it, is recorded; at every point of
 * the log a crash image is made (writes since the last flush kept or dropped at random, several
 * ways) and must pass qemu-img check, have the old or the new size, and hold the data flushed
 * before the crash.
 */
class Qcow2ResizeCrashIT {
    private static final long MIB = 1 << 20;
    private static final long OLD_SIZE = 64 * MIB;
    private static final long NEW_SIZE = 700L << 30;

    @TempDir
    Path dir;

    @BeforeEach
    void tools() {
        ExternalTools.assumeTools("qemu-img", "qemu-io");
    }

    @Test
    void aCrashAnywhereInAGrowLeavesAConsistentImageOfTheOldOrTheNewSize() throws Exception {
        Path img = dir.resolve("grow.qcow2");
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", img.toString(), "64M");
        ExternalTools.ok("qemu-io", "-f", "qcow2", "-c", "write -P 3 1M 64k", img.toString());
        byte[] base = Files.readAllBytes(img);
        RecordingFile rec;
        int flushedWrite; // log index after which the 5M write is durable
        try (FileChannel ch = FileChannel.open(img, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            rec = new RecordingFile(HostFile.of(ch));
            Qcow2Driver d = Qcow2Driver.openOn(null, rec, false, Metadata.DEFAULT_CACHE_BYTES, false);
            try {
                rec.startRecording();
                d.write(5 * MIB, pattern(7), false);
                d.flush();
                flushedWrite = rec.size();
                d.truncate(NEW_SIZE);
                d.write(600L << 30, pattern(9), false);
                d.flush();
            } finally {
                d.close();
            }
        }
        List<RecordingFile.Event> log = rec.log();
        CrashReplay replay = new CrashReplay(base, log);
        Path crash = dir.resolve("crash.qcow2");
        Random r = new Random(42);
        int images = 0;
        for (int p = 0; p <= log.size(); p++) {
            for (int variant = 0; variant < 3; variant++) {
                long seed = r.nextLong();
                String where = "crash point " + p + " of " + log.size() + ", unstable-subset seed " + seed;
                replay.writeCrashImage(p, new Random(seed), crash);
                ExternalTools.Result check = ExternalTools.run("qemu-img", "check", "-f", "qcow2", crash.toString());
                assertThat(check.exit()).as("qemu-img check (0 clean, 3 leaks only) at %s: %s", where, check.out())
                        .isIn(0, 3);
                String info = ExternalTools.ok("qemu-img", "info", "-f", "qcow2", crash.toString());
                assertThat(info).as(where).containsAnyOf("virtual size: 64 MiB", "virtual size: 700 GiB");
                assertThat(read(crash, 1 * MIB)).as("data from before the recording, " + where)
                        .isEqualTo(filled(3));
                if (p >= flushedWrite) {
                    assertThat(read(crash, 5 * MIB)).as("a write flushed before the resize, " + where)
                            .isEqualTo(filled(7));
                }
                if (p == log.size()) {
                    assertThat(info).contains("virtual size: 700 GiB");
                    assertThat(read(crash, 600L << 30)).isEqualTo(filled(9));
                }
                images++;
            }
        }
        assertThat(images).isGreaterThan(10);
    }

    private static ByteBuffer pattern(int value) {
        return ByteBuffer.wrap(filled(value));
    }

    private static byte[] filled(int value) {
        byte[] b = new byte[64 * 1024];
        Arrays.fill(b, (byte) value);
        return b;
    }

    private static byte[] read(Path image, long offset) throws Exception {
        try (FileChannel ch = FileChannel.open(image, StandardOpenOption.READ)) {
            Qcow2Driver d = Qcow2Driver.openOn(null, HostFile.of(ch), true);
            try {
                byte[] b = new byte[64 * 1024];
                if (offset + b.length > d.length()) {
                    return new byte[0]; // the crash kept the old size: nothing there
                }
                d.read(offset, ByteBuffer.wrap(b));
                return b;
            } finally {
                d.close();
            }
        }
    }
}
