package jblockd.block.blkdebug;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.concurrent.locks.ReentrantLock;

import jblockd.block.BlockChild;
import jblockd.block.FilterDriver;
import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.Capabilities;
import jblockd.block.DriverRegistry;
import jblockd.block.Errno;
import jblockd.block.Extent;
import jblockd.block.IoError;
import jblockd.block.OpenContext;

/**
 * The {@code blkdebug} filter (QEMU's block/blkdebug.c): forwards everything to its {@code image}
 * child, except requests matched by an {@code inject-error} rule, which fail with the rule's
 * errno as {@link IoError}. Rules come from a QEMU config file ({@code config}) and from the
 * inline {@code inject-error} list of blockdev-add, file rules first. A {@code once} rule is
 * removed when it fires. Growable when the child is, so it can sit between qcow2 and its file.
 * Thread-safe: matching and removal happen under one lock; I/O runs outside it.
 */
public final class BlkdebugDriver implements FilterDriver {
    private final BlockNode image;
    private final String config;
    private final int align;
    /** cache.no-flush=on: QEMU's bdrv_co_flush never calls blkdebug's flush, so its rules never see one. */
    private final boolean noFlush;
    private final ReentrantLock lock = new ReentrantLock();
    /** Guarded by {@link #lock}. */
    private final List<Rule> rules;
    private final List<StateRule> stateRules;
    /** Guarded by {@link #lock}; QEMU's initial state is 1. */
    private int state = 1;

    private BlkdebugDriver(BlockNode image, String config, int align, boolean noFlush, List<Rule> rules,
                           List<StateRule> stateRules) {
        this.image = image;
        this.config = config;
        this.align = align;
        this.noFlush = noFlush;
        this.rules = rules;
        this.stateRules = stateRules;
    }

    public static void register(DriverRegistry r) {
        r.<BlockdevOptions.Blkdebug>register("blkdebug", BlkdebugDriver::open);
        r.registerProtocol("blkdebug", BlkdebugDriver::parseFilename);
    }

    /**
     * blkdebug.c blkdebug_parse_filename(): {@code blkdebug:CONFIG:IMAGE}, an empty CONFIG for
     * none; IMAGE is itself a filename (its protocol layer: the format goes above blkdebug).
     */
    private static BlockdevOptions parseFilename(String filename, BlockdevOptions.Common common,
                                                 jblockd.block.Filenames filenames) throws IOException {
        String rest = filename.substring("blkdebug:".length());
        int sep = rest.indexOf(':');
        if (sep < 0) {
            throw new IoError(Errno.EINVAL, "blkdebug requires both config file and image path");
        }
        String config = rest.substring(0, sep);
        BlockdevOptions image = filenames.protocolOptions(rest.substring(sep + 1), common);
        return new BlockdevOptions.Blkdebug(common, new jblockd.block.BlockdevRef.Inline(image),
                config.isEmpty() ? null : config, List.of(), null);
    }

    public static BlkdebugDriver open(BlockdevOptions.Blkdebug o, OpenContext ctx) throws IOException {
        // Rules first, so a bad config fails before the child is opened (blkdebug_open order).
        List<Rule> rules = new ArrayList<>();
        List<StateRule> stateRules = new ArrayList<>();
        if (o.config() != null && !o.config().isEmpty()) {
            BlkdebugConfig.Rules file = BlkdebugConfig.read(Path.of(o.config()));
            rules.addAll(file.inject());
            stateRules.addAll(file.setState());
        }
        // QMP's inject-error / set-state lists feed the same engine as the config file's
        // [inject-error] / [set-state] groups (blkdebug.c config_parse_opts), after them.
        if (o.injectError() != null) {
            for (BlockdevOptions.InjectError e : o.injectError()) {
                rules.add(Rule.of(e));
            }
        }
        for (BlockdevOptions.SetState s : o.setState()) {
            stateRules.add(StateRule.of(s.event(), s.state(), s.newState()));
        }
        int align = 0;
        if (o.align() != null) {
            int a = o.align();
            if (a != 0 && (a < 0 || Integer.bitCount(a) != 1)) {
                throw new IoError(Errno.EINVAL, "Cannot meet constraints with align " + a);
            }
            align = a;
        }
        if (o.image() == null) {
            throw new IoError(Errno.EINVAL, "Parameter 'image' is missing");
        }
        BlockNode image = ctx.child(o.image(), "image", o.common().readOnly());
        if (image == null) {
            throw new IoError(Errno.EINVAL, "Parameter 'image' is missing");
        }
        if (!o.common().readOnly() && image.readOnly()) {
            throw new IoError(Errno.EPERM, "Block node is read-only");
        }
        return new BlkdebugDriver(image, o.config(), align, o.common().cacheNoFlush(), rules,
                List.copyOf(stateRules));
    }

    /**
     * One request is one event step: find the first inject rule of the current state that
     * matches it (blkdebug.c rule_check(); a fired once-rule is removed), then move the state
     * by the first matching set-state rule (QEMU processes its head-inserted list, so the rule
     * written first wins there too).
     */
    private void check(Rule.Op op, long offset, long bytes) throws IoError {
        Rule hit = null;
        lock.lock();
        try {
            for (Iterator<Rule> it = rules.iterator(); it.hasNext(); ) {
                Rule r = it.next();
                if (r.matches(op, offset, bytes, state)) {
                    hit = r;
                    if (r.once() && r.errno() != 0) {
                        it.remove();
                    }
                    break;
                }
            }
            for (StateRule s : stateRules) {
                if (s.fires(op, state)) {
                    state = s.newState();
                    break;
                }
            }
        } finally {
            lock.unlock();
        }
        if (hit != null && hit.errno() != 0) {
            throw IoError.of(Errno.fromCode(hit.errno()));
        }
    }

    /** The current blkdebug state (1 at open); for tests and queries. */
    public int state() {
        lock.lock();
        try {
            return state;
        } finally {
            lock.unlock();
        }
    }

    /** The rules still armed (once-rules disappear after firing); for tests and queries. */
    public int armedRules() {
        lock.lock();
        try {
            return rules.size();
        } finally {
            lock.unlock();
        }
    }

    @Override
    public String driverName() {
        return "blkdebug";
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        check(Rule.Op.READ, offset, dst.remaining());
        image.read(offset, dst);
    }

    @Override
    public void write(long offset, ByteBuffer src, boolean fua) throws IOException {
        check(Rule.Op.WRITE, offset, src.remaining());
        image.write(offset, src, fua);
    }

    @Override
    public void writeZeroes(long offset, long length, boolean mayUnmap) throws IOException {
        check(Rule.Op.WRITE_ZEROES, offset, length);
        image.writeZeroes(offset, length, mayUnmap);
    }

    @Override
    public void discard(long offset, long length) throws IOException {
        check(Rule.Op.DISCARD, offset, length);
        image.discard(offset, length);
    }

    @Override
    public void flush() throws IOException {
        // A flush covers no range, so only rules without a sector match it (rule_check(bs, 0, 0)).
        if (!noFlush) {
            check(Rule.Op.FLUSH, 0, 0);
        }
        image.flush();
    }

    @Override
    public long length() throws IOException {
        return image.length();
    }

    @Override
    public Extent status(long offset, long length) throws IOException {
        check(Rule.Op.BLOCK_STATUS, offset, length);
        return image.status(offset, length);
    }

    @Override
    public Capabilities capabilities() {
        Capabilities c = image.capabilities();
        return new Capabilities(image.readOnly(), c.canDiscard(), c.canWriteZeroes(), c.canFua(),
                Math.max(align, c.requestAlignment()), c.growable());
    }

    @Override
    public void close() {
        // nothing of our own; the graph closes the image child
    }

    /** QEMU's refreshed name of a blkdebug node: {@code blkdebug:CONFIG:IMAGE}. */
    @Override
    public String filename() {
        return "blkdebug:" + (config == null ? "" : config) + ":" + image.driver().filename();
    }

    @Override
    public List<BlockChild> children() {
        return List.of(new BlockChild("image", image));
    }

    /** blkdebug is a filter: queries show its image as backing-image (bdrv_filter_or_cow_bs). */
    @Override
    public BlockNode filtered() {
        return image;
    }

    /**
     * Empty, unlike other filters: blkdebug is a protocol driver in QEMU (bdrv_file_open), and
     * bdrv_get_allocated_file_size() answers -ENOTSUP for those, so actual-size is omitted.
     */
    @Override
    public java.util.OptionalLong allocatedFileSize() {
        return java.util.OptionalLong.empty();
    }
}
