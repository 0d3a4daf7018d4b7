package jblockd.block;

import java.io.IOException;
import java.nio.file.Path;

/**
 * Creates a new image file of a format (qemu-img create), used by drive-backup/drive-mirror,
 * blockdev-snapshot-sync and (through the format's own entry on a node) blockdev-create.
 */
@FunctionalInterface
public interface ImageCreator {

    /**
     * @param backingFile   backing file name to record, or null
     * @param backingFormat its format, or null
     * @param clusterSize   0 for the format's default
     * @param refcountBits  0 for the format's default (qcow2: 16)
     * @param lazyRefcounts qcow2's compatible feature bit 0 (v3 only)
     */
    record Options(Path path, long size, String backingFile, String backingFormat, int clusterSize,
                   boolean compatV2, int refcountBits, boolean lazyRefcounts) {
        public Options(Path path, long size, String backingFile, String backingFormat, int clusterSize,
                       boolean compatV2) {
            this(path, size, backingFile, backingFormat, clusterSize, compatV2, 0, false);
        }

        public static Options of(Path path, long size) {
            return new Options(path, size, null, null, 0, false);
        }
    }

    /** Creates (or truncates) the file; the image then opens with this format's driver. */
    void create(Options options) throws IOException;
}
