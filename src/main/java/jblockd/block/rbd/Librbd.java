package jblockd.block.rbd;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.MethodType;
import java.util.Optional;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * The librados and librbd calls the rbd driver makes (reference/ceph.md §6), bound with
 * {@code java.lang.foreign}: downcall handles only, no state. Every call returns librbd's
 * result ({@code -errno} on failure); {@link RbdImage} and {@link RadosCluster} turn those into
 * {@link jblockd.block.IoError}s. Loaded once per daemon, on first use, and only if the
 * libraries are installed ({@link #load}).
 */
@SuppressWarnings("restricted") // jblockd runs with --enable-native-access=ALL-UNNAMED (pom, manifest)
final class Librbd {
    /** librbd.h RBD_FEATURE_FAST_DIFF: the object map answers diffs per whole object. */
    static final long FEATURE_FAST_DIFF = 1L << 4;

    final MethodHandle radosCreate2;
    final MethodHandle radosConfReadFile;
    final MethodHandle radosConfSet;
    final MethodHandle radosConnect;
    final MethodHandle radosShutdown;
    final MethodHandle radosIoctxCreate;
    final MethodHandle radosIoctxDestroy;
    final MethodHandle radosIoctxSetNamespace;
    final MethodHandle rbdOpen;
    final MethodHandle rbdOpenReadOnly;
    final MethodHandle rbdClose;
    final MethodHandle rbdGetSize;
    final MethodHandle rbdGetFeatures;
    final MethodHandle rbdResize;
    final MethodHandle rbdStat;
    final MethodHandle rbdAioCreateCompletion;
    final MethodHandle rbdAioGetReturnValue;
    final MethodHandle rbdAioRelease;
    final MethodHandle rbdAioRead2;
    final MethodHandle rbdAioWrite2;
    final MethodHandle rbdAioDiscard;
    final MethodHandle rbdAioWriteZeroes;
    final MethodHandle rbdAioFlush;
    final MethodHandle rbdDiffIterate2;
    final MethodHandle rbdSnapCreate;
    final MethodHandle rbdSnapRemove;
    final MethodHandle rbdSnapList;
    final MethodHandle rbdSnapListEnd;
    final Linker linker = Linker.nativeLinker();

    private Librbd(SymbolLookup rados, SymbolLookup rbd) {
        radosCreate2 = h(rados, "rados_create2", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS, JAVA_LONG));
        radosConfReadFile = h(rados, "rados_conf_read_file", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
        radosConfSet = h(rados, "rados_conf_set", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS));
        radosConnect = h(rados, "rados_connect", FunctionDescriptor.of(JAVA_INT, ADDRESS));
        radosShutdown = h(rados, "rados_shutdown", FunctionDescriptor.ofVoid(ADDRESS));
        radosIoctxCreate = h(rados, "rados_ioctx_create", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS));
        radosIoctxDestroy = h(rados, "rados_ioctx_destroy", FunctionDescriptor.ofVoid(ADDRESS));
        radosIoctxSetNamespace = h(rados, "rados_ioctx_set_namespace", FunctionDescriptor.ofVoid(ADDRESS, ADDRESS));
        rbdOpen = h(rbd, "rbd_open", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS, ADDRESS));
        rbdOpenReadOnly = h(rbd, "rbd_open_read_only", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS,
                ADDRESS));
        rbdClose = h(rbd, "rbd_close", FunctionDescriptor.of(JAVA_INT, ADDRESS));
        rbdGetSize = h(rbd, "rbd_get_size", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
        rbdGetFeatures = h(rbd, "rbd_get_features", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
        rbdResize = h(rbd, "rbd_resize", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG));
        rbdStat = h(rbd, "rbd_stat", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, JAVA_LONG));
        rbdAioCreateCompletion = h(rbd, "rbd_aio_create_completion",
                FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS));
        rbdAioGetReturnValue = h(rbd, "rbd_aio_get_return_value", FunctionDescriptor.of(JAVA_LONG, ADDRESS));
        rbdAioRelease = h(rbd, "rbd_aio_release", FunctionDescriptor.ofVoid(ADDRESS));
        rbdAioRead2 = h(rbd, "rbd_aio_read2", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, JAVA_LONG, ADDRESS,
                ADDRESS, JAVA_INT));
        rbdAioWrite2 = h(rbd, "rbd_aio_write2", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, JAVA_LONG,
                ADDRESS, ADDRESS, JAVA_INT));
        rbdAioDiscard = h(rbd, "rbd_aio_discard", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, JAVA_LONG,
                ADDRESS));
        rbdAioWriteZeroes = h(rbd, "rbd_aio_write_zeroes", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG,
                JAVA_LONG, ADDRESS, JAVA_INT, JAVA_INT));
        rbdAioFlush = h(rbd, "rbd_aio_flush", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
        rbdDiffIterate2 = h(rbd, "rbd_diff_iterate2", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, JAVA_LONG,
                JAVA_LONG, JAVA_BYTE, JAVA_BYTE, ADDRESS, ADDRESS));
        rbdSnapCreate = h(rbd, "rbd_snap_create", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
        rbdSnapRemove = h(rbd, "rbd_snap_remove", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
        rbdSnapList = h(rbd, "rbd_snap_list", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS));
        rbdSnapListEnd = h(rbd, "rbd_snap_list_end", FunctionDescriptor.ofVoid(ADDRESS));
    }

    private MethodHandle h(SymbolLookup lib, String name, FunctionDescriptor d) {
        MemorySegment f = lib.find(name).orElseThrow(() -> new UnsatisfiedLinkError("no symbol " + name));
        return linker.downcallHandle(f, d);
    }

    /** librados.so.2 and librbd.so.1 (the runtime packages), or empty with the reason. */
    static Optional<Librbd> load(StringBuilder why) {
        try {
            SymbolLookup rados = SymbolLookup.libraryLookup("librados.so.2", Arena.global());
            SymbolLookup rbd = SymbolLookup.libraryLookup("librbd.so.1", Arena.global());
            return Optional.of(new Librbd(rados, rbd));
        } catch (IllegalArgumentException | UnsatisfiedLinkError e) {
            why.append(e.getMessage());
            return Optional.empty();
        }
    }

    /** An upcall stub for {@code void cb(rbd_completion_t, void *arg)} calling {@code target(MemorySegment, MemorySegment)}. */
    MemorySegment completionStub(MethodHandle target, Arena arena) {
        return linker.upcallStub(target, FunctionDescriptor.ofVoid(ADDRESS, ADDRESS), arena);
    }

    /** An upcall stub for {@code int cb(uint64_t off, size_t len, int exists, void *arg)}. */
    MemorySegment diffStub(MethodHandle target, Arena arena) {
        return linker.upcallStub(target, FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_INT, ADDRESS),
                arena);
    }

    static MethodHandle virtual(Object self, String method, MethodType type) {
        try {
            return MethodHandles.privateLookupIn(self.getClass(), MethodHandles.lookup())
                    .findVirtual(self.getClass(), method, type).bindTo(self);
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException(e);
        }
    }

    /**
     * sizeof(rbd_image_info_t): u64 size, u64 obj_size, u64 num_objs, int order, char
     * block_name_prefix[24], int64 parent_pool, char parent_name[96] (librbd.h), padded.
     */
    static final long IMAGE_INFO_SIZE = 8 + 8 + 8 + 4 + 24 + 4 + 8 + 96;
    static final long IMAGE_INFO_OBJ_SIZE = 8;

    /** sizeof(rbd_snap_info_t): u64 id, u64 size, const char *name (librbd.h). */
    static final long SNAP_INFO_SIZE = 24;
    static final long SNAP_INFO_SIZE_OFFSET = 8;
    static final long SNAP_INFO_NAME_OFFSET = 16;
}
