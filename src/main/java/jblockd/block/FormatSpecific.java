package jblockd.block;

import java.util.List;

/**
 * A format driver's own facts for query-block's {@code image.format-specific}
 * (qapi/block-core.json ImageInfoSpecific, a union on {@code type}). Only the formats jblockd
 * opens have a variant.
 */
public sealed interface FormatSpecific {

    /** The union's discriminator value ({@code qcow2}). */
    String type();

    /**
     * ImageInfoSpecificQCow2 as QEMU 7.2's qcow2_get_specific_info() fills it from the header:
     * a v2 image has only compat, compression-type and refcount-bits (the other members are
     * null and omitted); v3 adds lazy-refcounts, corrupt and extended-l2.
     *
     * @param compat          "0.10" (v2) or "1.1" (v3)
     * @param compressionType "zlib" or "zstd" (Qcow2CompressionType)
     * @param lazyRefcounts   compatible feature bit 0; null for v2
     * @param refcountBits    1 << refcount_order
     * @param corrupt         incompatible feature bit 1; null for v2
     * @param extendedL2      incompatible feature bit 4; null for v2
     * @param bitmaps         the persistent bitmaps of a v3 image whose bitmaps autoclear bit is
     *                        set; null (omitted) when there are none
     */
    record Qcow2(String compat, String compressionType, Boolean lazyRefcounts, int refcountBits,
                 Boolean corrupt, Boolean extendedL2, List<Qcow2Bitmap> bitmaps) implements FormatSpecific {
        public Qcow2 {
            bitmaps = bitmaps == null || bitmaps.isEmpty() ? null : List.copyOf(bitmaps);
        }

        @Override
        public String type() {
            return "qcow2";
        }
    }

    /**
     * ImageInfoSpecificRbd: only {@code encryption-format}, which jblockd does not open, so
     * QEMU's {@code {"type": "rbd", "data": {}}} for a plain image.
     */
    record Rbd() implements FormatSpecific {
        @Override
        public String type() {
            return "rbd";
        }
    }

    /**
     * One persistent bitmap of a qcow2 image (Qcow2BitmapInfo).
     *
     * @param flags Qcow2BitmapInfoFlags names in QEMU's order: "in-use", "auto"
     */
    record Qcow2Bitmap(String name, long granularity, List<String> flags) {
        public Qcow2Bitmap {
            flags = List.copyOf(flags);
        }
    }
}
