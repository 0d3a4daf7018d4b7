package jblockd.block.qcow2;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Random;

/**
 * Builds the file a power loss at a point of a {@link RecordingFile} log can leave behind: the
 * base file, every write a completed flush covered, and a random subset of the writes after it,
 * cut into 512-byte sectors (the unit a disk writes atomically) and applied in random order.
 * Crash points must be asked for in ascending order: the durable part is built incrementally.
 */
final class CrashReplay {
    private static final int SECTOR = 512;

    private final List<RecordingFile.Event> log;
    private byte[] durable;
    private long durableLength;
    /** Writes {@code [0, applied)} of the log are in {@link #durable}. */
    private int applied;
    private int lastPoint;

    CrashReplay(byte[] base, List<RecordingFile.Event> log) {
        this.log = log;
        this.durable = base.clone();
        this.durableLength = base.length;
    }

    /** Writes the crash image of a power loss after the first {@code point} log events to {@code out}. */
    void writeCrashImage(int point, Random r, Path out) throws IOException {
        if (point < lastPoint) {
            throw new IllegalArgumentException("crash points must ascend");
        }
        lastPoint = point;
        int stableEnd = 0;
        for (int i = 0; i < point; i++) {
            if (log.get(i) instanceof RecordingFile.Flush f) {
                stableEnd = Math.max(stableEnd, f.covers());
            }
        }
        for (; applied < stableEnd; applied++) {
            if (log.get(applied) instanceof RecordingFile.Write w) {
                durableLength = apply(w.offset(), w.data(), 0, w.data().length, durableLength);
            }
        }
        List<long[]> sectors = new ArrayList<>(); // {log index, byte position in the write, length}
        for (int i = stableEnd; i < point; i++) {
            if (log.get(i) instanceof RecordingFile.Write w) {
                int pos = 0;
                while (pos < w.data().length) {
                    long at = w.offset() + pos;
                    int n = (int) Math.min(w.data().length - pos, SECTOR - at % SECTOR);
                    sectors.add(new long[] {i, pos, n});
                    pos += n;
                }
            }
        }
        // Which unflushed sectors reached the disk: all, none, each with a random chance, all
        // but one write's, or only one write's (a missing barrier between two writes shows
        // when the later one landed and the earlier one did not).
        int mode = r.nextInt(8);
        double keep = mode == 0 ? 1 : mode == 1 ? 0 : r.nextDouble();
        long oneWrite = sectors.isEmpty() ? -1 : sectors.get(r.nextInt(sectors.size()))[0];
        List<long[]> landed = new ArrayList<>();
        for (long[] s : sectors) {
            boolean lands = switch (mode) {
                case 2, 3 -> r.nextDouble() < keep;
                case 4, 5 -> s[0] != oneWrite;
                case 6, 7 -> s[0] == oneWrite;
                default -> keep == 1;
            };
            if (lands) {
                landed.add(s);
            }
        }
        Collections.shuffle(landed, r);
        byte[] saved = durable.clone();
        long savedLength = durableLength;
        long length = durableLength;
        for (long[] s : landed) {
            RecordingFile.Write w = (RecordingFile.Write) log.get((int) s[0]);
            length = apply(w.offset() + s[1], w.data(), (int) s[1], (int) s[2], length);
        }
        try (FileChannel ch = FileChannel.open(out, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.TRUNCATE_EXISTING)) {
            ByteBuffer b = ByteBuffer.wrap(durable, 0, (int) length);
            while (b.hasRemaining()) {
                ch.write(b);
            }
        }
        durable = saved;
        durableLength = savedLength;
    }

    private long apply(long offset, byte[] data, int from, int len, long length) {
        long end = offset + len;
        if (end > durable.length) {
            durable = java.util.Arrays.copyOf(durable, (int) Math.max(end, durable.length * 3L / 2));
        }
        System.arraycopy(data, from, durable, (int) offset, len);
        return Math.max(length, end);
    }
}
