package jblockd.compose;

import java.util.Arrays;
import java.util.List;

import jblockd.compose.CompositionFailure.Check;

/**
 * What the guests must see: one byte array, the disk's content. Guest ops are applied after
 * their replies (a step's ops touch disjoint ranges, so order does not matter); reads and job
 * results are compared with it, and a mismatch names the first differing offset.
 */
final class DiskModel {
    private final byte[] bytes;

    DiskModel(byte[] initial) {
        this.bytes = initial.clone();
    }

    long size() {
        return bytes.length;
    }

    /** A copy of the whole disk now (a backup's point in time, a mirror's expected target). */
    byte[] snapshot() {
        return bytes.clone();
    }

    void write(long offset, byte[] data) {
        System.arraycopy(data, 0, bytes, (int) offset, data.length);
    }

    void zero(long offset, int length) {
        Arrays.fill(bytes, (int) offset, (int) offset + length, (byte) 0);
    }

    /**
     * After a TRIM each byte reads either as before or as zero (proto.md: the content of a
     * trimmed range is unspecified but stable); what a read then returned becomes the model.
     */
    void adoptTrimmed(long offset, byte[] readBack, String what) {
        for (int i = 0; i < readBack.length; i++) {
            byte old = bytes[(int) offset + i];
            if (readBack[i] != old && readBack[i] != 0) {
                throw new CompositionFailure(Check.GUEST_READ, what + ": trimmed byte at offset " + (offset + i)
                        + " reads 0x" + hex(readBack[i]) + ", neither its old value 0x" + hex(old) + " nor zero");
            }
        }
        write(offset, readBack);
    }

    /** Fails with the first differing offset when {@code actual} is not the model at {@code offset}. */
    void checkRead(long offset, byte[] actual, String what) {
        String diff = difference(bytes, (int) offset, actual);
        if (diff != null) {
            throw new CompositionFailure(Check.GUEST_READ, what + ": " + diff);
        }
    }

    /** base:allocation extents of [offset, offset+length): described, and ZERO only over zeroes. */
    void checkStatus(long offset, int length, List<long[]> extents, String what) {
        long pos = offset;
        for (long[] e : extents) {
            long len = e[0];
            int flags = (int) e[1];
            if (len <= 0 || pos + len > offset + length) {
                throw new CompositionFailure(Check.BLOCK_STATUS, what + ": extent " + pos + "+" + len
                        + " outside the request " + offset + "+" + length);
            }
            if ((flags & NbdGuest.STATE_ZERO) != 0) {
                for (long i = pos; i < pos + len; i++) {
                    if (bytes[(int) i] != 0) {
                        throw new CompositionFailure(Check.BLOCK_STATUS, what + ": extent " + pos + "+" + len
                                + " has flags " + flags + " (reads as zeroes) but the disk holds 0x"
                                + hex(bytes[(int) i]) + " at offset " + i);
                    }
                }
            }
            pos += len;
        }
        if (pos == offset) {
            throw new CompositionFailure(Check.BLOCK_STATUS, what + ": no extent for " + offset + "+" + length);
        }
    }

    /** Null when {@code actual} equals {@code expected[from..]}, else where and how they differ. */
    static String difference(byte[] expected, int from, byte[] actual) {
        if (from + actual.length > expected.length) {
            return "length " + actual.length + " at " + from + " runs past the disk (" + expected.length + ")";
        }
        int first = -1;
        int count = 0;
        int last = -1;
        for (int i = 0; i < actual.length; i++) {
            if (actual[i] != expected[from + i]) {
                if (first < 0) {
                    first = i;
                }
                last = i;
                count++;
            }
        }
        if (first < 0) {
            return null;
        }
        int zeroes = 0;
        for (int i = first; i <= last; i++) {
            if (actual[i] != expected[from + i] && actual[i] == 0) {
                zeroes++;
            }
        }
        return "mismatch at offset " + (from + first) + " (expected 0x" + hex(expected[from + first]) + ", got 0x"
                + hex(actual[first]) + "); " + count + " bytes differ in " + (from + first) + ".." + (from + last)
                + (zeroes == count ? ", all of them read as zero" : "");
    }

    /** Whole-image comparison (a target file against a snapshot). */
    static String difference(byte[] expected, byte[] actual) {
        if (expected.length != actual.length) {
            String d = difference(expected, 0, Arrays.copyOf(actual, Math.min(actual.length, expected.length)));
            return "size " + actual.length + " instead of " + expected.length + (d == null ? "" : "; " + d);
        }
        return difference(expected, 0, actual);
    }

    private static String hex(byte b) {
        return String.format("%02x", b & 0xff);
    }
}
