package jblockd.cli;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/**
 * The demo's source image: a sparse raw file where each MiB is either a hole (every fourth
 * MiB, so backups have something to skip) or filled with a pattern that names its own offset
 * (an 8-byte big-endian offset every 512 bytes, the rest a byte derived from the MiB index),
 * so a misplaced block is never mistaken for a right one.
 */
final class SampleImage {
    private SampleImage() {
    }

    static void create(Path file, long size) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.TRUNCATE_EXISTING)) {
            ByteBuffer mib = ByteBuffer.allocate(1 << 20);
            for (long off = 0, i = 0; off < size; off += mib.capacity(), i++) {
                if (i % 4 == 3) {
                    continue;
                }
                mib.clear();
                byte fill = (byte) (0x41 + i % 26);
                while (mib.hasRemaining()) {
                    long at = off + mib.position();
                    if (at % 512 == 0) {
                        mib.putLong(at);
                    } else {
                        mib.put(fill);
                    }
                }
                mib.flip().limit((int) Math.min(mib.capacity(), size - off));
                while (mib.hasRemaining()) {
                    ch.write(mib, off + mib.position());
                }
            }
            ch.truncate(size);
            if (ch.size() < size) {
                ch.write(ByteBuffer.allocate(1), size - 1); // the last MiB was a hole
            }
        }
    }
}
