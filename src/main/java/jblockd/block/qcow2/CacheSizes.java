package jblockd.block.qcow2;

import jblockd.block.BlockdevOptions;
import jblockd.block.Errno;
import jblockd.block.IoError;

/**
 * The metadata cache budgets of a qcow2 node from its {@code cache-size}, {@code l2-cache-size},
 * {@code refcount-cache-size} and {@code l2-cache-entry-size}, with QEMU 7.2's rules and texts
 * (block/qcow2.c read_cache_sizes, qcow2_update_options_prepare). Without any of them jblockd
 * keeps its own defaults ({@link Metadata#DEFAULT_CACHE_BYTES}: 8 MiB of L2 tables, 4 MiB of
 * refcount blocks, where QEMU sizes the L2 cache to the disk up to 32 MiB). jblockd caches whole
 * L2 tables, so an entry size other than the cluster size is refused.
 */
record CacheSizes(long l2Bytes, long refcountBytes) {
    /** MIN_REFCOUNT_CACHE_SIZE: clusters. */
    private static final int MIN_REFCOUNT_CACHE = 4;
    private static final int MIN_CLUSTER_BITS = 9;

    static CacheSizes of(BlockdevOptions.Qcow2Runtime r, long virtualSize, int clusterSize) throws IoError {
        boolean combinedSet = r.cacheSize() != null;
        boolean l2Set = r.l2CacheSize() != null;
        boolean refcountSet = r.refcountCacheSize() != null;
        boolean entrySet = r.l2CacheEntrySize() != null;
        if (!combinedSet && !l2Set && !refcountSet && !entrySet) {
            return new CacheSizes(Metadata.DEFAULT_CACHE_BYTES, Metadata.DEFAULT_CACHE_BYTES / 2);
        }
        long minRefcount = (long) MIN_REFCOUNT_CACHE * clusterSize;
        long maxL2Entries = (virtualSize + clusterSize - 1) / clusterSize;
        long maxL2Cache = roundUp(maxL2Entries * 8, clusterSize);
        long combined = combinedSet ? r.cacheSize() : 0;
        long l2Max = l2Set ? r.l2CacheSize() : 32L << 20; // DEFAULT_L2_CACHE_MAX_SIZE
        long refcount = refcountSet ? r.refcountCacheSize() : 0;
        long entry = entrySet ? r.l2CacheEntrySize() : clusterSize;
        long l2 = Long.compareUnsigned(maxL2Cache, l2Max) <= 0 ? maxL2Cache : l2Max;
        if (combinedSet) {
            if (l2Set && refcountSet) {
                throw invalid("cache-size, l2-cache-size and refcount-cache-size may not be set at the same time");
            } else if (l2Set && Long.compareUnsigned(l2Max, combined) > 0) {
                throw invalid("l2-cache-size may not exceed cache-size");
            } else if (Long.compareUnsigned(refcount, combined) > 0) {
                throw invalid("refcount-cache-size may not exceed cache-size");
            }
            if (l2Set) {
                refcount = combined - l2;
            } else if (refcountSet) {
                l2 = combined - refcount;
            } else if (Long.compareUnsigned(combined, maxL2Cache + minRefcount) >= 0) {
                l2 = maxL2Cache;
                refcount = combined - l2;
            } else {
                refcount = Long.compareUnsigned(combined, minRefcount) <= 0 ? combined : minRefcount;
                l2 = combined - refcount;
            }
        }
        if (Long.compareUnsigned(entry, 1 << MIN_CLUSTER_BITS) < 0 || Long.compareUnsigned(entry, clusterSize) > 0
                || Long.bitCount(entry) != 1) {
            throw invalid("L2 cache entry size must be a power of two between " + (1 << MIN_CLUSTER_BITS)
                    + " and the cluster size (" + clusterSize + ")");
        }
        if (entrySet && entry != clusterSize) {
            throw invalid("jblockd caches whole L2 tables: l2-cache-entry-size must be the cluster size ("
                    + clusterSize + ")");
        }
        if (Long.compareUnsigned(l2 / entry, Integer.MAX_VALUE) > 0) {
            throw invalid("L2 cache size too big");
        }
        if (Long.compareUnsigned(refcount / clusterSize, Integer.MAX_VALUE) > 0) {
            throw invalid("Refcount cache size too big");
        }
        return new CacheSizes(l2, refcount);
    }

    /** QEMU's cache-clean-interval: seconds (default 600, 0 never); above UINT_MAX refused. */
    static long cleanInterval(BlockdevOptions.Qcow2Runtime r) throws IoError {
        long v = r.cacheCleanInterval() == null ? 600 : r.cacheCleanInterval();
        if (Long.compareUnsigned(v, 0xffffffffL) > 0) {
            throw invalid("Cache clean interval too big");
        }
        return v;
    }

    private static long roundUp(long v, long to) {
        return (v + to - 1) / to * to;
    }

    private static IoError invalid(String text) {
        return new IoError(Errno.EINVAL, text);
    }
}
