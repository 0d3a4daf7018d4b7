package jblockd.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The one-shot verification reading both images through jblockd's own nodes (no qemu-img). */
class OneShotVerifyTest {
    @TempDir
    Path dir;

    @Test
    void sampleImageHasHolesAndSelfNamingBlocks() throws Exception {
        Path img = dir.resolve("s.img");
        SampleImage.create(img, 8L << 20);
        assertThat(Files.size(img)).isEqualTo(8L << 20);
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "r")) {
            f.seek(5L * 512 + (1 << 20));
            assertThat(f.readLong()).isEqualTo(5L * 512 + (1 << 20));
            f.seek((3L << 20) + 4096);
            assertThat(f.readLong()).isZero(); // MiB 3 is a hole
        }
    }

    @Test
    void identicalCopiesCompareEqualAndOneByteDiffers() throws Exception {
        Path a = dir.resolve("a.img");
        Path b = dir.resolve("b.img");
        SampleImage.create(a, 4L << 20);
        Files.copy(a, b);
        assertThat(OneShotBackup.sameContents(a, b)).isTrue();
        try (RandomAccessFile f = new RandomAccessFile(b.toFile(), "rw")) {
            f.seek((3L << 20) + 77); // inside the hole
            f.write(1);
        }
        assertThat(OneShotBackup.sameContents(a, b)).isFalse();
    }

    @Test
    void differentSizesDiffer() throws Exception {
        Path a = dir.resolve("a.img");
        Path b = dir.resolve("b.img");
        SampleImage.create(a, 2L << 20);
        SampleImage.create(b, 3L << 20);
        assertThat(OneShotBackup.sameContents(a, b)).isFalse();
    }
}
