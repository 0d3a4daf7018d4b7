package jblockd.block.qcow2;

import java.util.Iterator;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLongArray;

/**
 * A bounded cache of L2 tables keyed by their host offset. Lookups are lock-free (the read hot
 * path); inserts and evictions happen under the driver's metadata lock only, which is also the
 * only place entries change, so a stale copy can never be put back over a newer one. Eviction is
 * a clock: a hit sets {@code referenced}, the sweep spares a referenced table once, and never
 * takes a dirty table (changed in memory, not yet written back: {@link Metadata#writeBack}).
 */
final class L2Cache {

    /** One L2 table: {@code entries} are read without a lock, written under the metadata lock. */
    static final class Table {
        final long offset;
        final AtomicLongArray entries;
        volatile boolean referenced = true;
        /** Entries {@code [dirtyFrom, dirtyTo)} differ from the file; guarded by the metadata lock. */
        int dirtyFrom = Integer.MAX_VALUE;
        int dirtyTo = -1;

        boolean dirty() {
            return dirtyTo >= 0;
        }

        Table(long offset, AtomicLongArray entries) {
            this.offset = offset;
            this.entries = entries;
        }
    }

    private final ConcurrentHashMap<Long, Table> tables = new ConcurrentHashMap<>();
    private final int maxTables;

    L2Cache(int maxTables) {
        this.maxTables = Math.max(4, maxTables);
    }

    Table get(long offset) {
        Table t = tables.get(offset);
        if (t != null) {
            t.referenced = true;
        }
        return t;
    }

    /** Caller holds the metadata lock. */
    void put(Table t) {
        if (tables.size() >= maxTables) {
            evictOne();
        }
        tables.put(t.offset, t);
    }

    /** Caller holds the metadata lock. */
    int size() {
        return tables.size();
    }

    int maxTables() {
        return maxTables;
    }

    /** Drops the clean tables not used since the previous call. Caller holds the metadata lock. */
    void dropUnused() {
        Iterator<Table> it = tables.values().iterator();
        while (it.hasNext()) {
            Table t = it.next();
            if (!t.dirty() && !t.referenced) {
                it.remove();
            } else {
                t.referenced = false;
            }
        }
    }

    /** Evicts one clean table if there is one. Caller holds the metadata lock. */
    void trim() {
        evictOne();
    }

    private void evictOne() {
        for (int pass = 0; pass < 2; pass++) {
            Iterator<Table> it = tables.values().iterator();
            while (it.hasNext()) {
                Table t = it.next();
                if (t.dirty()) {
                    continue;
                }
                if (!t.referenced || pass == 1) {
                    it.remove();
                    return;
                }
                t.referenced = false;
            }
        }
        // Every table is dirty: the cache grows until the next write-back.
    }
}
