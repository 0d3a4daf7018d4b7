package jblockd.block;

/**
 * The allocation status of {@code [offset, offset + length)}: one run of the same status,
 * starting exactly at the queried offset; the next boundary is {@code offset + length}.
 */
public record Extent(long offset, long length, Allocation allocation) {
    public Extent {
        if (offset < 0 || length <= 0) {
            throw new IllegalArgumentException("bad extent " + offset + "+" + length);
        }
    }

    public long end() {
        return offset + length;
    }
}
