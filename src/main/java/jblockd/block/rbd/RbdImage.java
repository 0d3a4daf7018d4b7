package jblockd.block.rbd;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodType;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.atomic.AtomicLong;

import jblockd.block.Errno;
import jblockd.block.IoError;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * One open RBD image and the cluster connection that holds it (QEMU's rbd driver makes one
 * per node, too). I/O goes through librbd's asynchronous calls with a completion upcall, so a
 * request waits on a future, not inside native code: many requests are in flight at once from
 * virtual threads, none pinning a carrier. Buffers handed to librbd are native memory that
 * lives until the request completed. Thread-safe.
 */
final class RbdImage implements AutoCloseable {
    /** One diffed extent: {@code exists} false means the range reads as zeroes. */
    record DiffExtent(long offset, long length, boolean exists) {
    }

    private final Librbd lib;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment cluster;
    private final MemorySegment ioctx;
    private final MemorySegment image;
    private final MemorySegment onComplete;
    private final ConcurrentHashMap<Long, CompletableFuture<Long>> pending = new ConcurrentHashMap<>();
    private final AtomicLong ids = new AtomicLong();

    private RbdImage(Librbd lib, MemorySegment cluster, MemorySegment ioctx, MemorySegment image) {
        this.lib = lib;
        this.cluster = cluster;
        this.ioctx = ioctx;
        this.image = image;
        this.onComplete = lib.completionStub(Librbd.virtual(this, "completed",
                MethodType.methodType(void.class, MemorySegment.class, MemorySegment.class)), arena);
    }

    /** Where and as whom to connect; {@code settings} are rados_conf_set pairs applied after the conf file. */
    record Connection(String user, String confFile, List<String[]> settings) {
    }

    /**
     * Connects ({@code rados_create2}, the conf file, the settings, {@code rados_connect}) and
     * opens {@code pool[/namespace]/image[@snapshot]}, read-only when asked (a snapshot always
     * is). Failures carry librbd's errno and the step, as QEMU's texts do.
     */
    static RbdImage open(Librbd lib, Connection c, String pool, String namespace, String name, String snapshot,
                         boolean readOnly) throws IoError {
        MemorySegment cluster = MemorySegment.NULL;
        MemorySegment ioctx = MemorySegment.NULL;
        try (Arena a = Arena.ofConfined()) {
            MemorySegment p = a.allocate(ADDRESS);
            check(call(() -> (int) lib.radosCreate2.invokeExact(p, a.allocateFrom("ceph"),
                    a.allocateFrom("client." + (c.user() == null ? "admin" : c.user())), 0L)),
                    "error initializing");
            cluster = p.get(ADDRESS, 0);
            MemorySegment cl = cluster;
            if (c.confFile() != null) {
                check(call(() -> (int) lib.radosConfReadFile.invokeExact(cl, a.allocateFrom(c.confFile()))),
                        "error reading conf file " + c.confFile());
            } else {
                // QEMU reads the default conf file when none is given; a missing one is fine
                call(() -> (int) lib.radosConfReadFile.invokeExact(cl, MemorySegment.NULL));
            }
            for (String[] kv : c.settings()) {
                check(call(() -> (int) lib.radosConfSet.invokeExact(cl, a.allocateFrom(kv[0]), a.allocateFrom(kv[1]))),
                        "invalid conf option " + kv[0]);
            }
            check(call(() -> (int) lib.radosConnect.invokeExact(cl)), "error connecting");
            check(call(() -> (int) lib.radosIoctxCreate.invokeExact(cl, a.allocateFrom(pool), p)),
                    "error opening pool " + pool);
            ioctx = p.get(ADDRESS, 0);
            MemorySegment io = ioctx;
            if (namespace != null) {
                call(() -> {
                    lib.radosIoctxSetNamespace.invokeExact(io, a.allocateFrom(namespace));
                    return 0;
                });
            }
            MemorySegment snap = snapshot == null ? MemorySegment.NULL : a.allocateFrom(snapshot);
            boolean ro = readOnly || snapshot != null;
            int rc = call(() -> ro ? (int) lib.rbdOpenReadOnly.invokeExact(io, a.allocateFrom(name), p, snap)
                    : (int) lib.rbdOpen.invokeExact(io, a.allocateFrom(name), p, snap));
            check(rc, "error reading header from " + name);
            return new RbdImage(lib, cluster, ioctx, p.get(ADDRESS, 0));
        } catch (IoError e) {
            release(lib, cluster, ioctx);
            throw e;
        }
    }

    private static void release(Librbd lib, MemorySegment cluster, MemorySegment ioctx) {
        try {
            if (!ioctx.equals(MemorySegment.NULL)) {
                lib.radosIoctxDestroy.invokeExact(ioctx);
            }
            if (!cluster.equals(MemorySegment.NULL)) {
                lib.radosShutdown.invokeExact(cluster);
            }
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    long size() throws IoError {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment out = a.allocate(JAVA_LONG);
            check(call(() -> (int) lib.rbdGetSize.invokeExact(image, out)), "error getting image size");
            return out.get(JAVA_LONG, 0);
        }
    }

    /** The RADOS object size (rbd_stat's obj_size): QEMU's cluster-size of an rbd node. */
    long objectSize() throws IoError {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment info = a.allocate(Librbd.IMAGE_INFO_SIZE, 8);
            check(call(() -> (int) lib.rbdStat.invokeExact(image, info, Librbd.IMAGE_INFO_SIZE)), "error getting image info");
            return info.get(JAVA_LONG, Librbd.IMAGE_INFO_OBJ_SIZE);
        }
    }

    long features() throws IoError {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment out = a.allocate(JAVA_LONG);
            check(call(() -> (int) lib.rbdGetFeatures.invokeExact(image, out)), "error getting image features");
            return out.get(JAVA_LONG, 0);
        }
    }

    void resize(long size) throws IoError {
        check(call(() -> (int) lib.rbdResize.invokeExact(image, size)), "error resizing the image");
    }

    void read(long offset, ByteBuffer dst) throws IoError {
        int n = dst.remaining();
        if (dst.isDirect()) {
            MemorySegment buf = MemorySegment.ofBuffer(dst);
            checkLength(aio(c -> (int) lib.rbdAioRead2.invokeExact(image, offset, (long) n, buf, c, 0)), n, "read");
        } else {
            try (Arena a = Arena.ofConfined()) {
                MemorySegment buf = a.allocate(n);
                checkLength(aio(c -> (int) lib.rbdAioRead2.invokeExact(image, offset, (long) n, buf, c, 0)), n, "read");
                dst.put(buf.asByteBuffer());
                return;
            }
        }
        dst.position(dst.limit());
    }

    void write(long offset, ByteBuffer src) throws IoError {
        int n = src.remaining();
        if (src.isDirect()) {
            MemorySegment buf = MemorySegment.ofBuffer(src);
            check(aio(c -> (int) lib.rbdAioWrite2.invokeExact(image, offset, (long) n, buf, c, 0)), "write");
        } else {
            try (Arena a = Arena.ofConfined()) {
                MemorySegment buf = a.allocate(n);
                buf.asByteBuffer().put(src.duplicate());
                check(aio(c -> (int) lib.rbdAioWrite2.invokeExact(image, offset, (long) n, buf, c, 0)), "write");
            }
        }
        src.position(src.limit());
    }

    /** rbd_aio_write_zeroes: the range reads as zeroes afterwards (unlike discard, reference/ceph.md §5). */
    void writeZeroes(long offset, long length) throws IoError {
        check(aio(c -> (int) lib.rbdAioWriteZeroes.invokeExact(image, offset, length, c, 0, 0)), "write zeroes");
    }

    void discard(long offset, long length) throws IoError {
        check(aio(c -> (int) lib.rbdAioDiscard.invokeExact(image, offset, length, c)), "discard");
    }

    void flush() throws IoError {
        check(aio(c -> (int) lib.rbdAioFlush.invokeExact(image, c)), "flush");
    }

    /**
     * rbd_diff_iterate2 over {@code [offset, offset+length)}: the allocated extents, per whole
     * object when {@code wholeObject} (cheap with fast-diff), since {@code fromSnapshot} when not
     * null (exact: what changed since it, removed data as {@code exists=false}).
     */
    List<DiffExtent> diff(String fromSnapshot, long offset, long length, boolean wholeObject) throws IoError {
        List<DiffExtent> out = new ArrayList<>();
        DiffCollector collector = new DiffCollector(out);
        try (Arena a = Arena.ofShared()) {
            MemorySegment stub = lib.diffStub(Librbd.virtual(collector, "extent",
                    MethodType.methodType(int.class, long.class, long.class, int.class, MemorySegment.class)), a);
            MemorySegment from = fromSnapshot == null ? MemorySegment.NULL : a.allocateFrom(fromSnapshot);
            check(call(() -> (int) lib.rbdDiffIterate2.invokeExact(image, from, offset, length, (byte) 1,
                    (byte) (wholeObject ? 1 : 0), stub, MemorySegment.NULL)), "error querying allocation");
        }
        return out;
    }

    /** One RBD snapshot: its name and the image size when it was taken. */
    record Snap(String name, long size) {
    }

    /** rbd_snap_list, in librbd's order (snapshot id order, oldest first). */
    List<Snap> snapshots() throws IoError {
        int max = 16;
        while (true) {
            try (Arena a = Arena.ofConfined()) {
                MemorySegment n = a.allocate(JAVA_INT);
                n.set(JAVA_INT, 0, max);
                MemorySegment tab = a.allocate(Librbd.SNAP_INFO_SIZE * max, 8);
                int rc = call(() -> (int) lib.rbdSnapList.invokeExact(image, tab, n));
                if (rc == -34) { // ERANGE: max_snaps now holds the count needed
                    max = Math.max(max * 2, n.get(JAVA_INT, 0));
                    continue;
                }
                check(rc, "error listing snapshots");
                List<Snap> out = new ArrayList<>(rc);
                for (int i = 0; i < rc; i++) {
                    long base = i * Librbd.SNAP_INFO_SIZE;
                    String name = tab.get(ADDRESS, base + Librbd.SNAP_INFO_NAME_OFFSET).reinterpret(Long.MAX_VALUE)
                            .getString(0);
                    out.add(new Snap(name, tab.get(JAVA_LONG, base + Librbd.SNAP_INFO_SIZE_OFFSET)));
                }
                call(() -> {
                    lib.rbdSnapListEnd.invokeExact(tab);
                    return 0;
                });
                return out;
            }
        }
    }

    /** rbd_snap_create: a crash-consistent view of the whole image, now (the caller has drained it). */
    void createSnapshot(String name) throws IoError {
        try (Arena a = Arena.ofConfined()) {
            bare(call(() -> (int) lib.rbdSnapCreate.invokeExact(image, a.allocateFrom(name))));
        }
    }

    void removeSnapshot(String name) throws IoError {
        try (Arena a = Arena.ofConfined()) {
            bare(call(() -> (int) lib.rbdSnapRemove.invokeExact(image, a.allocateFrom(name))));
        }
    }

    /** The diff upcall's target: collects extents; never lets anything escape into librbd. */
    private static final class DiffCollector {
        private final List<DiffExtent> out;

        DiffCollector(List<DiffExtent> out) {
            this.out = out;
        }

        @SuppressWarnings("unused") // called from native code
        private int extent(long offset, long length, int exists, MemorySegment arg) {
            try {
                out.add(new DiffExtent(offset, length, exists != 0));
                return 0;
            } catch (Throwable t) {
                return -Errno.ENOMEM.code();
            }
        }
    }

    @Override
    public void close() {
        try {
            int rc = (int) lib.rbdClose.invokeExact(image);
            if (rc < 0) {
                java.util.logging.Logger.getLogger(RbdImage.class.getName())
                        .warning("rbd_close failed: " + Errno.fromCode(-rc).strerror());
            }
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
        release(lib, cluster, ioctx);
        arena.close();
    }

    // ==== asynchronous requests ===================================================================

    @FunctionalInterface
    private interface Submit {
        int run(MemorySegment completion) throws Throwable;
    }

    /** Submits one aio request and waits for its return value (uninterruptibly: librbd owns the buffer until then). */
    private long aio(Submit submit) throws IoError {
        long id = ids.incrementAndGet();
        CompletableFuture<Long> done = new CompletableFuture<>();
        pending.put(id, done);
        try (Arena a = Arena.ofConfined()) {
            MemorySegment p = a.allocate(ADDRESS);
            int rc = call(() -> (int) lib.rbdAioCreateCompletion.invokeExact(MemorySegment.ofAddress(id), onComplete, p));
            if (rc < 0) {
                pending.remove(id);
                return rc;
            }
            MemorySegment completion = p.get(ADDRESS, 0);
            rc = call(() -> submit.run(completion));
            if (rc < 0) {
                pending.remove(id);
                call(() -> {
                    lib.rbdAioRelease.invokeExact(completion);
                    return 0;
                });
                return rc;
            }
        }
        boolean interrupted = false;
        try {
            while (true) {
                try {
                    return done.get();
                } catch (InterruptedException e) {
                    interrupted = true;
                } catch (ExecutionException e) {
                    throw new IoError(Errno.EIO, "librbd completion failed", e.getCause());
                }
            }
        } finally {
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        }
    }

    /** The completion upcall (librbd's thread): the request's result, then the completion released. */
    @SuppressWarnings("unused") // called from native code
    private void completed(MemorySegment completion, MemorySegment arg) {
        try {
            long rv = (long) lib.rbdAioGetReturnValue.invokeExact(completion);
            lib.rbdAioRelease.invokeExact(completion);
            CompletableFuture<Long> f = pending.remove(arg.address());
            if (f != null) {
                f.complete(rv);
            }
        } catch (Throwable t) {
            CompletableFuture<Long> f = pending.remove(arg.address());
            if (f != null) {
                f.completeExceptionally(t);
            }
        }
    }

    @FunctionalInterface
    private interface NativeCall {
        int run() throws Throwable;
    }

    private static int call(NativeCall c) {
        try {
            return c.run();
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    private static void check(long rc, String what) throws IoError {
        if (rc < 0) {
            Errno e = Errno.fromCode((int) -rc);
            throw new IoError(e, what + ": " + strerror((int) -rc, e));
        }
    }

    /** A failure whose message is strerror alone: the caller words it as QEMU does. */
    private static void bare(int rc) throws IoError {
        if (rc < 0) {
            Errno e = Errno.fromCode(-rc);
            throw new IoError(e, strerror(-rc, e));
        }
    }

    private static void checkLength(long rc, int expected, String what) throws IoError {
        check(rc, what);
        if (rc != expected) {
            throw new IoError(Errno.EIO, what + ": librbd transferred " + rc + " of " + expected + " bytes");
        }
    }

    /** strerror for the errnos librbd returns that {@link Errno} has no kind for. */
    static String strerror(int code, Errno kind) {
        return switch (code) {
            case 17 -> "File exists";
            case 34 -> "Numerical result out of range";
            case 108 -> "Cannot send after transport endpoint shutdown";
            default -> kind == Errno.EIO && code != Errno.EIO.code() ? "errno " + code : kind.strerror();
        };
    }
}
