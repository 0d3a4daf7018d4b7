package jblockd.block.blkdebug;

import java.util.EnumSet;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

import jblockd.block.BlockdevOptions;
import jblockd.block.Errno;
import jblockd.block.IoError;

/**
 * One {@code inject-error} rule (QEMU's BlkdebugRule, ACTION_INJECT_ERROR).
 *
 * @param event  the QEMU event name, kept for messages
 * @param ops    the request kinds the rule applies to
 * @param errno  the error to return; 0 means "let the request through" (blkdebug.c rule_check)
 * @param offset byte offset that a request must cover (sector * 512), or -1 for any request
 * @param once   the rule is removed after it fired once
 * @param state  the blkdebug state the rule belongs to (0: any)
 */
record Rule(String event, Set<Op> ops, int errno, long offset, boolean once, int state) {

    /** Request kinds, QEMU's BlkdebugIOType. */
    enum Op {
        READ("read"), WRITE("write"), WRITE_ZEROES("write-zeroes"), DISCARD("discard"),
        FLUSH("flush"), BLOCK_STATUS("block-status");

        final String qapiName;

        Op(String qapiName) {
            this.qapiName = qapiName;
        }

        static Op fromIotype(String name) throws IoError {
            for (Op op : values()) {
                if (op.qapiName.equals(name)) {
                    return op;
                }
            }
            throw new IoError(Errno.EINVAL, "Invalid parameter '" + name + "'");
        }
    }

    /**
     * Which request kinds an event stands for. QEMU activates a rule when a parent driver emits
     * the event (raw-format.c emits read_aio before a read, write_aio before a write; block/io.c
     * emits pwritev/pwritev_zero on the node written and flush_to_os/flush_to_disk on a flush)
     * and then fails the next matching request; jblockd has no event plumbing between drivers,
     * so the event selects the request kinds directly, and a write rule never fails a read.
     * Observed difference (qemu-io 7.2, raw over blkdebug): once a read_aio rule has been
     * activated by a read, QEMU also fails writes covering its sector (the default iotype mask
     * covers every kind), and write-zeroes/discard pass until the first write activates a
     * write_aio rule. Sequences of plain reads and writes behave the same in both.
     */
    private static final Map<String, Set<Op>> EVENTS = Map.of(
            "read_aio", EnumSet.of(Op.READ),
            "write_aio", EnumSet.of(Op.WRITE, Op.WRITE_ZEROES, Op.DISCARD),
            "pwritev", EnumSet.of(Op.WRITE, Op.WRITE_ZEROES),
            "pwritev_zero", EnumSet.of(Op.WRITE_ZEROES),
            "flush_to_os", EnumSet.of(Op.FLUSH),
            "flush_to_disk", EnumSet.of(Op.FLUSH));

    /** QEMU 7.2's other BlkdebugEvent names: valid there, never emitted by jblockd's drivers. */
    private static final Set<String> QEMU_ONLY_EVENTS = Set.of(
            "l1_update", "l1_grow_alloc_table", "l1_grow_write_table", "l1_grow_activate_table",
            "l2_load", "l2_update", "l2_update_compressed", "l2_alloc_cow_read", "l2_alloc_write",
            "read_backing_aio", "read_compressed", "write_compressed", "vmstate_load",
            "vmstate_save", "cow_read", "cow_write", "reftable_load", "reftable_grow",
            "reftable_update", "refblock_load", "refblock_update", "refblock_update_part",
            "refblock_alloc", "refblock_alloc_hookup", "refblock_alloc_write",
            "refblock_alloc_write_blocks", "refblock_alloc_write_table",
            "refblock_alloc_switch_table", "cluster_alloc", "cluster_alloc_bytes", "cluster_free",
            "pwritev_rmw_head", "pwritev_rmw_after_head", "pwritev_rmw_tail",
            "pwritev_rmw_after_tail", "pwritev_done", "empty_image_prepare",
            "l1_shrink_write_table", "l1_shrink_free_l2_clusters", "cor_write",
            "cluster_alloc_space", "none");

    static final long SECTOR_SIZE = 512;

    /**
     * Builds a rule the way blkdebug.c add_rule() does: errno defaults to EIO, sector to -1
     * (any), once to off; an explicit iotype narrows the rule to that one request kind.
     */
    static Rule of(String event, Integer errno, Long sector, boolean once, String iotype, Integer state)
            throws IoError {
        Set<Op> ops = eventOps(event);
        String ev = event.toLowerCase(Locale.ROOT).replace('.', '_');
        if (iotype != null) {
            ops = EnumSet.of(Op.fromIotype(iotype));
        }
        int err = errno == null ? Errno.EIO.code() : errno;
        if (err < 0) {
            throw new IoError(Errno.EINVAL, "Parameter 'errno' expects a non-negative value");
        }
        long s = sector == null ? -1 : sector;
        if (s < -1 || s > Long.MAX_VALUE / SECTOR_SIZE) {
            throw new IoError(Errno.EINVAL, "Parameter 'sector' expects a sector number or -1");
        }
        return new Rule(ev, Set.copyOf(ops), err, s == -1 ? -1 : s * SECTOR_SIZE, once,
                state == null ? 0 : state);
    }

    /** The request kinds of a QEMU event name; refuses names jblockd cannot honour. */
    static Set<Op> eventOps(String event) throws IoError {
        if (event == null) {
            throw new IoError(Errno.EINVAL, "Missing event name for rule");
        }
        String ev = event.toLowerCase(Locale.ROOT).replace('.', '_');
        Set<Op> ops = EVENTS.get(ev);
        if (ops == null) {
            if (QEMU_ONLY_EVENTS.contains(ev)) {
                throw new IoError(Errno.ENOTSUP, "blkdebug event '" + event + "' is not supported by "
                        + "jblockd (supported: read_aio, write_aio, pwritev, pwritev_zero, flush_to_os, "
                        + "flush_to_disk)");
            }
            throw new IoError(Errno.EINVAL, "Invalid parameter '" + event + "'");
        }
        return ops;
    }

    /**
     * A QMP rule. {@code immediately} only changes when QEMU completes the failed request (no
     * yield to the event loop first); a request here fails synchronously either way.
     */
    static Rule of(BlockdevOptions.InjectError e) throws IoError {
        Integer state = null;
        if (e.state() != null) {
            if (e.state() < Integer.MIN_VALUE || e.state() > Integer.MAX_VALUE) {
                throw new IoError(Errno.EINVAL, "Parameter 'state' expects a 32-bit number");
            }
            state = e.state().intValue();
        }
        return of(e.event(), e.errno(), e.sector(), e.once(), e.iotype(), state);
    }

    /**
     * blkdebug.c rule_check(): kind matches, the rule belongs to the current state (0: any),
     * and the request covers the offset (or any).
     */
    boolean matches(Op op, long reqOffset, long reqBytes, int currentState) {
        if (!ops.contains(op) || (state != 0 && state != currentState)) {
            return false;
        }
        return offset == -1 || (reqBytes > 0 && offset >= reqOffset && offset - reqOffset < reqBytes);
    }
}
