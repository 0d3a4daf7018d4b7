package jblockd.block;

import java.io.IOException;
import java.nio.file.Path;

/** Creates a new image file of a format (qemu-img create), used by drive-backup/drive-mirror. */
@FunctionalInterface
public interface ImageCreator {

    /**
     * @param backingFile   backing file name to record, or null
     * @param backingFormat its format, or null
     * @param clusterSize   0 for the format's default
     */
    record Options(Path path, long size, String backingFile, String backingFormat, int clusterSize,
                   boolean compatV2) {
        public static Options of(Path path, long size) {
            return new Options(path, size, null, null, 0, false);
        }
    }

    /** Creates (or truncates) the file; the image then opens with this format's driver. */
    void create(Options options) throws IOException;
}
