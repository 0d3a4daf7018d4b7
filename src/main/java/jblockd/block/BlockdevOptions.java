package jblockd.block;

import java.util.List;

/**
 * Typed options of blockdev-add / --blockdev, one record per driver (QEMU's BlockdevOptions
 * union on {@code driver}). The QMP layer builds them from validated JSON; the block layer never
 * sees JSON. Optional members are null when absent.
 */
public sealed interface BlockdevOptions {

    /** Members every driver shares (BlockdevOptions' base in qapi/block-core.json). */
    record Common(String nodeName, boolean readOnly, boolean cacheDirect, boolean cacheNoFlush,
                  boolean discardUnmap) {
        public static Common defaults() {
            return new Common(null, false, false, false, false);
        }

        public Common withNodeName(String name) {
            return new Common(name, readOnly, cacheDirect, cacheNoFlush, discardUnmap);
        }

        public Common withReadOnly(boolean ro) {
            return new Common(nodeName, ro, cacheDirect, cacheNoFlush, discardUnmap);
        }
    }

    Common common();

    /** The QMP driver name. */
    String driver();

    record File(Common common, String filename) implements BlockdevOptions {
        public String driver() {
            return "file";
        }
    }

    record Raw(Common common, BlockdevRef file, Long offset, Long size) implements BlockdevOptions {
        public String driver() {
            return "raw";
        }
    }

    /** {@code backing} null: open the backing file named in the image header. */
    record Qcow2(Common common, BlockdevRef file, BlockdevRef backing) implements BlockdevOptions {
        public String driver() {
            return "qcow2";
        }
    }

    /** One {@code inject-error} rule of blkdebug (BlkdebugInjectErrorOptions). */
    record InjectError(String event, Integer errno, Long sector, boolean once, String iotype) {
    }

    record Blkdebug(Common common, BlockdevRef image, String config, List<InjectError> injectError,
                    Integer align) implements BlockdevOptions {
        public String driver() {
            return "blkdebug";
        }
    }

    record NullCo(Common common, long size, boolean readZeroes) implements BlockdevOptions {
        public String driver() {
            return "null-co";
        }
    }
}
