package jblockd.block.qcow2;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.Errno;
import jblockd.block.ImageCreator;
import jblockd.block.IoError;

/**
 * A write to the image file fails (EIO, once, at every position in turn): the request fails,
 * its retry succeeds, and the image stays consistent for qemu-img check (no leaks, no errors)
 * and reads back what the successful requests wrote.
 */
class Qcow2FaultIT {
    @TempDir
    Path dir;

    /** A host file whose {@code failAt}-th write (counting from 1) fails once with EIO. */
    static final class FailingFile implements HostFile {
        private final HostFile inner;
        private final int failAt;
        private int writes;

        FailingFile(HostFile inner, int failAt) {
            this.inner = inner;
            this.failAt = failAt;
        }

        @Override
        public void read(long offset, ByteBuffer dst) throws IOException {
            inner.read(offset, dst);
        }

        @Override
        public synchronized void write(long offset, ByteBuffer src) throws IOException {
            if (++writes == failAt) {
                throw new IoError(Errno.EIO, "injected write error #" + failAt);
            }
            inner.write(offset, src);
        }

        @Override
        public void flush() throws IOException {
            inner.flush();
        }

        @Override
        public long length() throws IOException {
            return inner.length();
        }
    }

    @Test
    void failedWritesLeaveNoLeaksAndRetriesLand() throws Exception {
        assumeTrue(Qcow2InteropIT.onPath("qemu-img"));
        for (int failAt = 1; failAt <= 70; failAt++) {
            int cs = failAt % 2 == 0 ? 4096 : 512;
            Path img = dir.resolve("f" + failAt + ".qcow2");
            Qcow2Creator.create(new ImageCreator.Options(img, 8 << 20, null, null, cs, false));
            byte[] model = new byte[8 << 20];
            Random r = new Random(failAt);
            try (FileChannel ch = FileChannel.open(img, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
                Qcow2Driver d = Qcow2Driver.openOn(null, new FailingFile(HostFile.of(ch), failAt), false,
                        failAt % 3 == 0 ? 2048 : Metadata.DEFAULT_CACHE_BYTES); // tiny cache: evictions
                for (int i = 0; i < 12; i++) {
                    int off = r.nextInt(model.length - 300_000);
                    int len = 1 + r.nextInt(300_000);
                    int op = r.nextInt(4);
                    byte[] data = Qcow2Workload.randomBytes(r, len);
                    for (int attempt = 0; ; attempt++) {
                        try {
                            if (op == 0) {
                                d.writeZeroes(off, len, r.nextBoolean());
                            } else if (op == 1) {
                                d.discard(off, len);
                            } else {
                                d.write(off, ByteBuffer.wrap(data), false);
                            }
                            break;
                        } catch (IoError e) {
                            assertThat(attempt).isZero();
                            assertThat(e.errno()).isEqualTo(Errno.EIO);
                        }
                    }
                    if (op == 0) {
                        Arrays.fill(model, off, off + len, (byte) 0);
                    } else if (op == 1) {
                        long a = (off + cs - 1) / cs * cs;
                        long b = (off + len) / cs * cs;
                        if (a < b) {
                            Arrays.fill(model, (int) a, (int) b, (byte) 0);
                        }
                    } else {
                        System.arraycopy(data, 0, model, off, len);
                    }
                }
                byte[] back = new byte[model.length];
                d.read(0, ByteBuffer.wrap(back));
                assertThat(Arrays.mismatch(back, model)).as("failAt %d", failAt).isEqualTo(-1);
                try {
                    d.flush();
                } catch (IoError e) {
                    d.flush(); // the injected error hit the write-back: it stayed dirty, retry
                }
                d.close();
            }
            Process p = new ProcessBuilder("qemu-img", "check", img.toString()).redirectErrorStream(true).start();
            String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            assertThat(p.waitFor(60, TimeUnit.SECONDS)).isTrue();
            assertThat(p.exitValue()).as("failAt %d: %s", failAt, out).isZero();
            Files.delete(img);
        }
    }
}
