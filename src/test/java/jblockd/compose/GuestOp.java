package jblockd.compose;

import java.util.Random;

/**
 * One guest request of a schedule step, issued by guest {@code client} over its NBD connection.
 * The ops of one step touch disjoint byte ranges, so whatever order the server runs them in, the
 * disk afterwards is determined (see {@link DiskModel}).
 */
sealed interface GuestOp {
    int client();

    long offset();

    int length();

    /** True when the op may change what the disk reads back. */
    default boolean changesData() {
        return false;
    }

    String describe();

    /** NBD_CMD_WRITE of bytes drawn from {@code Random(dataSeed)} (so misplaced data shows). */
    record Write(int client, long offset, int length, long dataSeed, boolean fua) implements GuestOp {
        byte[] data() {
            byte[] b = new byte[length];
            new Random(dataSeed).nextBytes(b);
            return b;
        }

        @Override
        public boolean changesData() {
            return true;
        }

        @Override
        public String describe() {
            return "g" + client + " write " + offset + "+" + length + " data=" + dataSeed + (fua ? " fua" : "");
        }
    }

    /** NBD_CMD_WRITE_ZEROES; with {@code fast} the server may refuse with ENOTSUP (then nothing changed). */
    record Zero(int client, long offset, int length, boolean noHole, boolean fast) implements GuestOp {
        @Override
        public boolean changesData() {
            return true;
        }

        @Override
        public String describe() {
            return "g" + client + " zero " + offset + "+" + length + (noHole ? " no-hole" : "") + (fast ? " fast" : "");
        }
    }

    /** NBD_CMD_TRIM: afterwards each byte reads as before or as zero (proto.md leaves it open). */
    record Trim(int client, long offset, int length) implements GuestOp {
        @Override
        public boolean changesData() {
            return true;
        }

        @Override
        public String describe() {
            return "g" + client + " trim " + offset + "+" + length;
        }
    }

    /** NBD_CMD_READ, checked against the model. */
    record Read(int client, long offset, int length) implements GuestOp {
        @Override
        public String describe() {
            return "g" + client + " read " + offset + "+" + length;
        }
    }

    /** NBD_CMD_BLOCK_STATUS (structured guests only): a range said to read as zeroes must be zero. */
    record Status(int client, long offset, int length) implements GuestOp {
        @Override
        public String describe() {
            return "g" + client + " block-status " + offset + "+" + length;
        }
    }

    /** NBD_CMD_FLUSH. */
    record Flush(int client) implements GuestOp {
        @Override
        public long offset() {
            return 0;
        }

        @Override
        public int length() {
            return 0;
        }

        @Override
        public String describe() {
            return "g" + client + " flush";
        }
    }
}
