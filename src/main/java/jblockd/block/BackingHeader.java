package jblockd.block;

/**
 * The backing file link as the image header records it (qcow2 backing file name and backing
 * format extension), whatever node is actually attached as backing: query-block shows it as
 * {@code backing-filename} / {@code backing-filename-format} (QEMU's bs->backing_file and
 * bs->backing_format).
 *
 * @param filename the name as written in the header, not resolved
 * @param format   the backing format extension, or null when the header has none
 */
public record BackingHeader(String filename, String format) {
}
