package jblockd.block.bitmap;

import java.util.BitSet;
import java.util.Objects;

/**
 * One bitmap as an image format keeps it (qcow2's bitmap directory entry plus its data), the
 * currency between a {@link PersistentBitmapStore} and the node's in-memory bitmaps.
 *
 * @param name        1..1023 bytes of UTF-8
 * @param granularity bytes per bit, a power of two from 512 to 2^31
 * @param length      the bytes the bitmap covers (the node's virtual size when stored)
 * @param enabled     recording (qcow2's {@code auto} flag)
 * @param inconsistent loaded with {@code in_use} set and not recovered: {@code bits} is empty and
 *                    must not be trusted; the store keeps such an entry in the image unchanged
 *                    until it is removed
 * @param bits        bit n covers bytes [n*granularity, (n+1)*granularity); qcow2's on-disk order
 *                    is exactly {@link BitSet#valueOf(byte[])} / {@link BitSet#toByteArray()}
 */
public record StoredBitmap(String name, long granularity, long length, boolean enabled,
                           boolean inconsistent, BitSet bits) {
    public StoredBitmap {
        Objects.requireNonNull(name);
        Objects.requireNonNull(bits);
        if (granularity < 512 || Long.bitCount(granularity) != 1) {
            throw new IllegalArgumentException("granularity must be a power of two >= 512: " + granularity);
        }
    }
}
