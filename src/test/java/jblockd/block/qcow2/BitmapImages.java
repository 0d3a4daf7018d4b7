package jblockd.block.qcow2;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import jblockd.block.bitmap.PersistentBitmapStore;
import jblockd.block.bitmap.StoredBitmap;
import jblockd.testsupport.ExternalTools;

/**
 * Test support for persistent bitmaps: a qcow2 driver opened straight on a file (so a test can
 * drop it without closing, as a crash would), QEMU's tools to make images and to read bitmaps
 * back ({@code qemu-nbd -B} + {@code nbdinfo --map}), and the bit arithmetic tests compare.
 */
final class BitmapImages extends ExternalTools {
    private static final ObjectMapper JSON = new ObjectMapper();

    private BitmapImages() {
    }

    /** A driver on an open channel; closing the channel without {@link Opened#close()} is a crash. */
    record Opened(FileChannel channel, Qcow2Driver driver) implements AutoCloseable {
        PersistentBitmapStore store() {
            return driver.persistentBitmaps().orElseThrow();
        }

        StoredBitmap loaded(String name) {
            return store().loaded().stream().filter(b -> b.name().equals(name)).findFirst().orElseThrow();
        }

        void write(long offset, int length, int pattern) throws IOException {
            byte[] b = new byte[length];
            java.util.Arrays.fill(b, (byte) pattern);
            driver.write(offset, ByteBuffer.wrap(b), false);
        }

        /** Drops the driver without flushing or storing anything: what a kill -9 leaves. */
        void crash() throws IOException {
            channel.close();
        }

        /** Closes cleanly (flushes), unless the test crashed it already. */
        @Override
        public void close() throws IOException {
            if (!channel.isOpen()) {
                return;
            }
            try {
                driver.close();
            } finally {
                channel.close();
            }
        }
    }

    /**
     * Without the driver's background metadata write-back: what reaches the file depends on the
     * requests alone, so a test's crash point means the same every run.
     */
    static Opened open(Path img, boolean readOnly) throws IOException {
        FileChannel ch = readOnly ? FileChannel.open(img, StandardOpenOption.READ)
                : FileChannel.open(img, StandardOpenOption.READ, StandardOpenOption.WRITE);
        try {
            return new Opened(ch, Qcow2Driver.openOn(null, HostFile.of(ch), readOnly, Metadata.DEFAULT_CACHE_BYTES,
                    false));
        } catch (IOException | RuntimeException e) {
            ch.close();
            throw e;
        }
    }

    /** Granule indices {@code [offset, offset+len)} touches at {@code granularity}. */
    static BitSet granules(long granularity, long... offsetLengthPairs) {
        BitSet b = new BitSet();
        for (int i = 0; i < offsetLengthPairs.length; i += 2) {
            long off = offsetLengthPairs[i];
            long len = offsetLengthPairs[i + 1];
            b.set((int) (off / granularity), (int) ((off + len - 1) / granularity) + 1);
        }
        return b;
    }

    static StoredBitmap bitmap(String name, long granularity, long length, boolean enabled, BitSet bits) {
        return new StoredBitmap(name, granularity, length, enabled, false, bits);
    }

    /** {@code qemu-img info --output=json -U}'s format-specific bitmaps, or an empty list. */
    static List<JsonNode> qemuBitmaps(Path img) throws Exception {
        JsonNode info = JSON.readTree(ok("qemu-img", "info", "-U", "--output=json", img.toString()));
        List<JsonNode> out = new ArrayList<>();
        info.path("format-specific").path("data").path("bitmaps").forEach(out::add);
        return out;
    }

    /** {@code qemu-img check}: exit code and output. */
    static Result check(Path img) throws Exception {
        return run("qemu-img", "check", "-f", "qcow2", img.toString());
    }

    /**
     * The bitmap as QEMU reads it: qemu-nbd exports it as {@code qemu:dirty-bitmap:NAME} and
     * nbdinfo lists its dirty extents; returned as granule indices. qemu-nbd --fork returns once
     * it listens and exits after the one client.
     */
    static BitSet qemuBits(Path img, String name, long granularity) throws Exception {
        Path sock = img.resolveSibling(img.getFileName() + ".nbd.sock");
        Files.deleteIfExists(sock);
        ok("qemu-nbd", "-r", "-f", "qcow2", "-B", name, "-k", sock.toString(), "--fork", img.toString());
        String map = ok("nbdinfo", "--map=qemu:dirty-bitmap:" + name, "nbd+unix:///?socket=" + sock);
        BitSet bits = new BitSet();
        for (String line : map.split("\n")) {
            String[] f = line.trim().split("\\s+");
            if (f.length >= 3 && f[2].equals("1")) {
                long off = Long.parseLong(f[0]);
                long len = Long.parseLong(f[1]);
                bits.set((int) (off / granularity), (int) ((off + len + granularity - 1) / granularity));
            }
        }
        return bits;
    }

    /** The autoclear field of an image (header offset 88). */
    static long autoclear(Path img) throws IOException {
        try (FileChannel ch = FileChannel.open(img, StandardOpenOption.READ)) {
            ByteBuffer b = ByteBuffer.allocate(8);
            ch.read(b, 88);
            return b.getLong(0);
        }
    }

    static void patch(Path img, long offset, byte[] bytes) throws IOException {
        try (FileChannel ch = FileChannel.open(img, StandardOpenOption.WRITE)) {
            ch.write(ByteBuffer.wrap(bytes), offset);
        }
    }

    static byte[] read(Path img, long offset, int length) throws IOException {
        try (FileChannel ch = FileChannel.open(img, StandardOpenOption.READ)) {
            ByteBuffer b = ByteBuffer.allocate(length);
            ch.read(b, offset);
            return b.array();
        }
    }

    /** The bitmaps extension's fields {nb, directory size, directory offset}, or null. */
    static long[] bitmapsExtension(Path img) throws IOException {
        byte[] c0 = read(img, 0, 65536);
        ByteBuffer b = ByteBuffer.wrap(c0);
        int pos = b.getInt(100); // header_length
        while (pos + 8 <= c0.length) {
            int type = b.getInt(pos);
            int len = b.getInt(pos + 4);
            if (type == 0) {
                return null;
            }
            if (type == Qcow2Header.EXT_BITMAPS) {
                return new long[] {b.getInt(pos + 8), b.getLong(pos + 16), b.getLong(pos + 24)};
            }
            pos += 8 + ((len + 7) & ~7);
        }
        return null;
    }
}
