package jblockd.device;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.Objects;

import jblockd.block.BlockNode;
import jblockd.block.Errno;
import jblockd.block.IoError;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.ErrorAction;
import jblockd.qapi.IoOperation;
import jblockd.qapi.IoStatus;
import jblockd.qapi.QapiEvents;

/**
 * The guest's way into a {@link Device} (QEMU's BlockBackend request path plus the emulated
 * device's error handling, SPEC §5 and errors.md §4): every request passes the {@link RunState}
 * gate and the device's drain counter, runs on the device's current root, and a failure is resolved by rerror (reads) or werror
 * (writes, write-zeroes, discards, flushes):
 * <ul>
 *   <li>{@code report}: BLOCK_IO_ERROR action report, the error goes to the guest;</li>
 *   <li>{@code ignore}: BLOCK_IO_ERROR action ignore, the guest sees success;</li>
 *   <li>{@code stop}, or {@code enospc} for ENOSPC: BLOCK_IO_ERROR action stop, io-status
 *       failed/nospace, run state io-error; the request is held (not answered) and retried after
 *       {@code cont}. {@code enospc} with another errno reports.</li>
 * </ul>
 * With the write cache off (the device's {@code cache=writethrough|directsync}, or an export's
 * {@code writethrough}), every write and write-zeroes is FUA and every discard is followed by a
 * flush, so nothing is acknowledged before it is durable (QEMU's blk_co_pwritev adds
 * BDRV_REQ_FUA when {@code !blk->enable_write_cache}).
 * Thread-safe; requests run concurrently.
 */
public final class GuestIo {

    /** One guest operation on a node; may run again after a stop. */
    @FunctionalInterface
    public interface Task<T> {
        T run(BlockNode root) throws IOException;
    }

    private final Device device;
    private final RunState runState;
    private final QapiEvents events;
    private final boolean writethrough;

    public GuestIo(Device device, RunState runState, QapiEvents events) {
        this(device, runState, events, false);
    }

    /**
     * @param writethrough this way in has its write cache off whatever the device's (QEMU's
     *                     block-export-add {@code writethrough}: the export's own BlockBackend)
     */
    public GuestIo(Device device, RunState runState, QapiEvents events, boolean writethrough) {
        this.device = Objects.requireNonNull(device);
        this.runState = Objects.requireNonNull(runState);
        this.events = Objects.requireNonNull(events);
        this.writethrough = writethrough;
    }

    /** False when every write must be durable before it is acknowledged. */
    public boolean writeCacheEnabled() {
        return device.writeCacheEnabled() && !writethrough;
    }

    /** The FUA a request gets: the guest's, or always with the write cache off. */
    private boolean fua(boolean requested) {
        return requested || !writeCacheEnabled();
    }

    /** A device for an export made on a node name: no name, policies report/report (QEMU). */
    public static Device anonymousDevice(BlockNode node) {
        return new Device("", node, BlockdevOnError.REPORT, BlockdevOnError.REPORT);
    }

    public Device device() {
        return device;
    }

    public BlockNode root() {
        return device.root();
    }

    public void read(long offset, ByteBuffer dst) throws IoError {
        int start = dst.position();
        run(IoOperation.READ, IoStats.Type.READ, dst.remaining(), root -> {
            dst.position(start);
            root.read(offset, dst);
            return null;
        }, () -> {
            // ignore: the guest sees success; give it zeroes rather than stale buffer bytes
            dst.position(start);
            while (dst.hasRemaining()) {
                dst.put((byte) 0);
            }
        });
    }

    public void write(long offset, ByteBuffer src, boolean requestedFua) throws IoError {
        boolean fua = fua(requestedFua);
        int start = src.position();
        run(IoOperation.WRITE, IoStats.Type.WRITE, src.remaining(), root -> {
            src.position(start);
            root.write(offset, src, fua);
            return null;
        }, null);
    }

    public void writeZeroes(long offset, long length, boolean mayUnmap, boolean requestedFua) throws IoError {
        boolean fua = fua(requestedFua);
        run(IoOperation.WRITE, IoStats.Type.WRITE, length, root -> {
            root.writeZeroes(offset, length, mayUnmap);
            if (fua) {
                root.flush();
            }
            return null;
        }, null);
    }

    public void discard(long offset, long length, boolean requestedFua) throws IoError {
        boolean fua = fua(requestedFua);
        run(IoOperation.WRITE, IoStats.Type.UNMAP, length, root -> {
            try {
                root.discard(offset, length);
            } catch (IoError e) {
                // a discard is advisory: a node that cannot discard has done nothing wrong
                if (e.errno() != Errno.ENOTSUP) {
                    throw e;
                }
            }
            if (fua) {
                root.flush();
            }
            return null;
        }, null);
    }

    public void flush() throws IoError {
        run(IoOperation.WRITE, IoStats.Type.FLUSH, 0, root -> {
            root.flush();
            return null;
        }, null);
    }

    /**
     * Runs {@code task} through the gate with the policy of {@code op}; {@code op} null means no
     * policy (status queries): failures go straight to the caller. {@code onIgnore} prepares the
     * success a guest sees under {@code ignore} (may be null).
     */
    public <T> T run(IoOperation op, Task<T> task, Runnable onIgnore) throws IoError {
        return run(op, null, 0, task, onIgnore);
    }

    /**
     * As {@link #run(IoOperation, Task, Runnable)}, accounted in the device's {@link IoStats} as
     * one request of {@code acct} over {@code bytes} (null: not accounted), the way QEMU's
     * devices account: a reported failure is failed, an ignored one done, a stopped request
     * keeps its start time and is accounted once when it finally completes.
     */
    public <T> T run(IoOperation op, IoStats.Type acct, long bytes, Task<T> task, Runnable onIgnore)
            throws IoError {
        IoStats.Cookie cookie = acct == null ? null : device.stats().start(acct, bytes);
        try {
            T result = attempt(op, task, onIgnore);
            if (cookie != null) {
                device.stats().done(cookie);
            }
            return result;
        } catch (IoError e) {
            if (cookie != null) {
                device.stats().failed(cookie);
            }
            throw e;
        }
    }

    private <T> T attempt(IoOperation op, Task<T> task, Runnable onIgnore) throws IoError {
        while (true) {
            // The run state first: a request held by stop/cont is not in flight on the device,
            // so a drained graph change never waits for a stopped guest.
            runState.enterGuest();
            IoError failure;
            try {
                device.gate().enter();
                try {
                    // the root is read inside the gate: a drained root change cannot slip between
                    return task.run(device.root());
                } finally {
                    device.gate().leave();
                }
            } catch (IOException e) {
                failure = IoError.wrap(e);
            } finally {
                runState.leaveGuest();
            }
            if (op == null) {
                throw failure;
            }
            ErrorAction action = resolve(op, failure.errno());
            boolean nospace = failure.errno() == Errno.ENOSPC;
            events.blockIoError(device.name(), device.root().nodeName(), op, action,
                    device.ioStatusEnabled() ? nospace : null, failure.errno().strerror());
            switch (action) {
                case REPORT -> throw failure;
                case IGNORE -> {
                    if (onIgnore != null) {
                        onIgnore.run();
                    }
                    return null;
                }
                case STOP -> {
                    if (device.ioStatusEnabled()) {
                        device.setIoStatus(nospace ? IoStatus.NOSPACE : IoStatus.FAILED);
                    }
                    runState.ioError();
                    // loop: enterGuest() holds this request until cont, then it is retried
                }
            }
        }
    }

    private ErrorAction resolve(IoOperation op, Errno errno) {
        BlockdevOnError policy = op == IoOperation.READ ? device.rerror() : device.werror();
        if (policy == null) {
            policy = op == IoOperation.READ ? BlockdevOnError.REPORT : BlockdevOnError.ENOSPC;
        }
        return switch (policy) {
            case IGNORE -> ErrorAction.IGNORE;
            case STOP -> ErrorAction.STOP;
            case ENOSPC, AUTO -> errno == Errno.ENOSPC ? ErrorAction.STOP : ErrorAction.REPORT;
            case REPORT -> ErrorAction.REPORT;
        };
    }
}
