package jblockd.device;

import java.util.Objects;

import jblockd.block.BlockNode;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.IoStatus;

/**
 * A named device (QEMU's drive / BlockBackend): a root node plus the guest error policies and
 * io-status. Guests reach the root only through their device, so a job can put a filter above
 * the old root ({@link #replaceRoot}) and every guest request goes through it from then on.
 */
public final class Device {
    private final String name;
    private final BlockdevOnError rerror;
    private final BlockdevOnError werror;
    private final boolean writeCache;
    private volatile BlockNode root;
    private volatile IoStatus ioStatus = IoStatus.OK;
    private final RequestGate gate = new RequestGate();
    private final IoStats stats;

    /**
     * @param rerror report | ignore | stop (QEMU refuses enospc for reads)
     * @param werror report | ignore | stop | enospc
     */
    public Device(String name, BlockNode root, BlockdevOnError rerror, BlockdevOnError werror) {
        this(name, root, rerror, werror, true);
    }

    /**
     * @param writeCache false for {@code cache=writethrough|directsync}: the guest sees a disk
     *                   without a volatile write cache, so every write must be durable before it
     *                   is acknowledged ({@link GuestIo} makes each one FUA)
     */
    public Device(String name, BlockNode root, BlockdevOnError rerror, BlockdevOnError werror,
                  boolean writeCache) {
        // -drive's defaults: stats-account-invalid=on, stats-account-failed=on
        this(name, root, rerror, werror, writeCache, IoStats.system(true, true));
    }

    /** @param stats the device's accounting (query-blockstats), with its clock */
    public Device(String name, BlockNode root, BlockdevOnError rerror, BlockdevOnError werror,
                  boolean writeCache, IoStats stats) {
        this.stats = Objects.requireNonNull(stats);
        this.name = Objects.requireNonNull(name);
        this.root = Objects.requireNonNull(root);
        this.rerror = rerror;
        this.werror = werror;
        this.writeCache = writeCache;
    }

    public String name() {
        return name;
    }

    public BlockNode root() {
        return root;
    }

    /** What the guest did through this device (query-blockstats' device-level stats). */
    public IoStats stats() {
        return stats;
    }

    /**
     * Points the device at a new root (filter insertion/removal, mirror pivot). Only inside a
     * drained section over this device ({@link Devices#replaceRoot} opens one), so that no
     * guest request that already picked the old root is still running on it.
     */
    void replaceRoot(BlockNode newRoot) {
        if (!gate.drained()) {
            throw new IllegalStateException("device '" + name + "': root changed outside a drained section");
        }
        this.root = Objects.requireNonNull(newRoot);
    }

    /** The drain counter every guest request of this device passes (GuestIo). */
    RequestGate gate() {
        return gate;
    }

    /** QEMU's blk_enable_write_cache(): query-block's {@code cache.writeback}. */
    public boolean writeCacheEnabled() {
        return writeCache;
    }

    public BlockdevOnError rerror() {
        return rerror;
    }

    public BlockdevOnError werror() {
        return werror;
    }

    /**
     * QEMU tracks io-status only when an error policy can stop the guest: when rerror or werror
     * is not {@code report}. Without tracking, query-block has no io-status member and
     * BLOCK_IO_ERROR no nospace member.
     */
    public boolean ioStatusEnabled() {
        return rerror != BlockdevOnError.REPORT || werror != BlockdevOnError.REPORT;
    }

    public IoStatus ioStatus() {
        return ioStatus;
    }

    public void setIoStatus(IoStatus status) {
        this.ioStatus = status;
    }
}
