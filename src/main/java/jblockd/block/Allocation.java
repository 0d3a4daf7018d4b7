package jblockd.block;

/** What one layer says about a byte range (QEMU's BDRV_BLOCK_DATA / _ZERO / not _ALLOCATED). */
public enum Allocation {
    /** This layer holds data for the range (it may still happen to be zero bytes). */
    DATA,
    /** This layer says the range reads as zeroes: a file hole, a qcow2 zero cluster. */
    ZERO,
    /** This layer has nothing: reads go to the backing node, or are zeroes without one. */
    UNALLOCATED
}
