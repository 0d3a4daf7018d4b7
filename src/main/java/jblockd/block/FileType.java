package jblockd.block;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/** What kind of file a path names (sys/stat.h S_IFMT), for choosing and checking file or host_device. */
public enum FileType {
    REGULAR, DEVICE, OTHER, UNKNOWN;

    private static final int S_IFMT = 0170000;
    private static final int S_IFREG = 0100000;
    private static final int S_IFBLK = 0060000;
    private static final int S_IFCHR = 0020000;

    /** UNKNOWN when the path cannot be examined (missing, unreadable, no unix attribute view). */
    public static FileType of(Path path) {
        int type;
        try {
            type = (Integer) Files.getAttribute(path, "unix:mode") & S_IFMT;
        } catch (IOException | RuntimeException e) {
            return UNKNOWN;
        }
        return type == S_IFREG ? REGULAR : type == S_IFBLK || type == S_IFCHR ? DEVICE : OTHER;
    }
}
