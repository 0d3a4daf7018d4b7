package jblockd.nbd.server;

import java.io.IOException;
import java.util.List;
import java.util.Objects;
import java.util.concurrent.CopyOnWriteArrayList;

import jblockd.block.BlockNode;
import jblockd.block.bitmap.BlockDirtyBitmap;
import jblockd.device.GuestIo;
import jblockd.nbd.proto.Nbd;

/**
 * One NBD export: a name clients ask for, served through a device's {@link GuestIo} (so the
 * device's policies and run-state gate apply, and a filter a job puts above the device's root is
 * seen at once). {@code id} is the block-export id (nbd-server-add uses the name).
 * <p>
 * Besides {@code base:allocation}, an export may offer the meta contexts
 * {@code qemu:allocation-depth} and one {@code qemu:dirty-bitmap:NAME} per exported bitmap
 * (QEMU's NBDExport {@code allocation_depth} and {@code export_bitmaps}); the bitmaps are the
 * caller's to hold busy for the export's life.
 */
public final class NbdExport {
    private final String id;
    private final String name;
    private final String description;
    private final boolean writable;
    private final GuestIo io;
    private final String nodeName;
    private final long size;
    private final boolean allocationDepth;
    private final List<BlockDirtyBitmap> bitmaps;
    private final List<NbdConnection> connections = new CopyOnWriteArrayList<>();
    private volatile boolean shuttingDown;

    public NbdExport(String id, String name, String description, boolean writable, GuestIo io)
            throws IOException {
        this(id, name, description, writable, io, false, List.of());
    }

    /**
     * @param allocationDepth offer {@code qemu:allocation-depth}
     * @param bitmaps         offered as {@code qemu:dirty-bitmap:NAME}, context ids 2, 3, ... in
     *                        this order (named bitmaps only)
     */
    public NbdExport(String id, String name, String description, boolean writable, GuestIo io,
                     boolean allocationDepth, List<BlockDirtyBitmap> bitmaps) throws IOException {
        this.id = Objects.requireNonNull(id);
        this.name = Objects.requireNonNull(name);
        this.description = description;
        this.writable = writable;
        this.io = Objects.requireNonNull(io);
        this.allocationDepth = allocationDepth;
        this.bitmaps = List.copyOf(bitmaps);
        for (BlockDirtyBitmap b : this.bitmaps) {
            if (b.name() == null) {
                throw new IllegalArgumentException("an anonymous bitmap cannot be exported");
            }
        }
        BlockNode root = io.root();
        this.nodeName = root.nodeName();
        // Fixed at creation like QEMU's exp->size: clients cache it from the handshake.
        this.size = root.length();
    }

    public String id() {
        return id;
    }

    public String name() {
        return name;
    }

    public String description() {
        return description;
    }

    public boolean writable() {
        return writable;
    }

    public GuestIo io() {
        return io;
    }

    /** The node the export was made on, as query-block-exports shows it. */
    public String nodeName() {
        return nodeName;
    }

    public long size() {
        return size;
    }

    /** Whether {@code qemu:allocation-depth} is offered. */
    public boolean allocationDepth() {
        return allocationDepth;
    }

    /** The exported bitmaps, in context-id order. */
    public List<BlockDirtyBitmap> bitmaps() {
        return bitmaps;
    }

    public boolean shuttingDown() {
        return shuttingDown;
    }

    void markShuttingDown() {
        shuttingDown = true;
    }

    List<NbdConnection> connections() {
        return connections;
    }

    /**
     * Transmission flags as qemu-nbd 7.2 sends them (formats.md §8) plus CAN_MULTI_CONN: our nodes
     * are coherent across connections (one node, one cache), so a flush on one connection covers
     * writes completed on all. SEND_DF only when structured replies are negotiated.
     */
    int transmissionFlags(boolean structured) {
        int f = Nbd.FLAG_HAS_FLAGS | Nbd.FLAG_SEND_FLUSH | Nbd.FLAG_SEND_FUA | Nbd.FLAG_SEND_CACHE
                | Nbd.FLAG_CAN_MULTI_CONN;
        if (writable) {
            f |= Nbd.FLAG_SEND_TRIM | Nbd.FLAG_SEND_WRITE_ZEROES | Nbd.FLAG_SEND_FAST_ZERO;
        } else {
            f |= Nbd.FLAG_READ_ONLY;
        }
        if (structured) {
            f |= Nbd.FLAG_SEND_DF;
        }
        return f;
    }

    /** The minimum block size clients must respect (the root's request alignment, at least 1). */
    int requestAlignment() {
        return Math.max(1, io.root().capabilities().requestAlignment());
    }
}
