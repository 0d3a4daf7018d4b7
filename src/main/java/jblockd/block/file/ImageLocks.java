package jblockd.block.file;

import java.util.Set;

import jblockd.block.Errno;
import jblockd.block.IoError;
import jblockd.block.Perm;

/**
 * QEMU's image locking (block/file-posix.c raw_apply_lock_bytes / raw_check_lock_bytes):
 * open file description locks on single bytes of the image, so that QEMU processes and jblockd
 * daemons see each other's permissions. A node that uses permission bit {@code i} holds a
 * shared lock on byte {@code 100 + i}; one that does not share it holds byte {@code 200 + i}.
 * Taking a permission fails when any other open of the file holds {@code 200 + i} ("Failed to
 * get "write" lock"); not sharing one fails when any other holds {@code 100 + i} ("Failed to
 * get shared "write" lock"). OFD locks belong to the open file description, so two opens of
 * one image in this process exclude each other as they do in QEMU.
 */
final class ImageLocks {
    private static final long PERM_BASE = 100;
    private static final long SHARED_BASE = 200;

    private final int fd;
    private final String path;
    /** The bytes held now: permissions used, permissions not shared. */
    private Set<Perm> heldPerms = Perm.none();
    private Set<Perm> heldUnshared = Perm.none();

    ImageLocks(int fd, String path) {
        this.fd = fd;
        this.path = path;
    }

    /**
     * Whether OFD locks work on this file (locking=auto): the kernel knows F_OFD_GETLK and the
     * file system implements locks (some network file systems do not).
     */
    static boolean supported(int fd) {
        LibC.Result r = LibC.ofdLock(fd, LibC.F_OFD_GETLK, LibC.F_WRLCK, PERM_BASE, 1);
        return !r.failed();
    }

    /**
     * Claims the node's permissions: the bytes of both sets are taken first (old ones kept),
     * then the others' locks are checked; on a conflict the old state is restored, as QEMU's
     * raw_handle_perm_lock PREPARE / ABORT, and otherwise the bytes no longer needed go.
     */
    synchronized void apply(Set<Perm> perms, Set<Perm> shared) throws IoError {
        Set<Perm> unshared = Perm.all();
        unshared.removeAll(shared);
        Set<Perm> oldPerms = union(heldPerms, Perm.none());
        Set<Perm> oldUnshared = union(heldUnshared, Perm.none());
        try {
            set(union(oldPerms, perms), union(oldUnshared, unshared));
            check(perms, unshared);
        } catch (IoError e) {
            try {
                set(oldPerms, oldUnshared);
            } catch (IoError ignored) {
                // releasing only unlocks bytes: the conflict is the error to report
            }
            throw e;
        }
        set(perms, unshared);
    }

    /** Makes the held bytes exactly these, byte by byte (the record follows each change). */
    private void set(Set<Perm> perms, Set<Perm> unshared) throws IoError {
        for (Perm p : Perm.values()) {
            setByte(PERM_BASE + p.ordinal(), p, perms.contains(p), heldPerms);
            setByte(SHARED_BASE + p.ordinal(), p, unshared.contains(p), heldUnshared);
        }
    }

    private void setByte(long offset, Perm p, boolean want, Set<Perm> held) throws IoError {
        if (want == held.contains(p)) {
            return;
        }
        LibC.Result r = LibC.ofdLock(fd, LibC.F_OFD_SETLK, want ? LibC.F_RDLCK : LibC.F_UNLCK, offset, 1);
        if (r.failed()) {
            Errno e = Errno.fromCode(r.errno());
            throw new IoError(e, "Failed to lock byte " + offset + ": " + e.strerror());
        }
        if (want) {
            held.add(p);
        } else {
            held.remove(p);
        }
    }

    /** raw_check_lock_bytes(): QEMU's order (needed permissions first) and texts. */
    private void check(Set<Perm> perms, Set<Perm> unshared) throws IoError {
        for (Perm p : Perm.values()) {
            if (perms.contains(p) && heldByOthers(SHARED_BASE + p.ordinal())) {
                throw new IoError(Errno.EAGAIN, "Failed to get \"" + Perm.names(Set.of(p)) + "\" lock");
            }
        }
        for (Perm p : Perm.values()) {
            if (unshared.contains(p) && heldByOthers(PERM_BASE + p.ordinal())) {
                throw new IoError(Errno.EAGAIN, "Failed to get shared \"" + Perm.names(Set.of(p)) + "\" lock");
            }
        }
    }

    /** qemu_lock_fd_test(): would an exclusive lock of the byte conflict with another open's lock? */
    private boolean heldByOthers(long offset) throws IoError {
        LibC.Result r = LibC.ofdLock(fd, LibC.F_OFD_GETLK, LibC.F_WRLCK, offset, 1);
        if (r.failed()) {
            Errno e = Errno.fromCode(r.errno());
            throw new IoError(e, "Failed to test lock byte " + offset + " of '" + path + "': " + e.strerror());
        }
        return r.value() != LibC.F_UNLCK;
    }

    private static Set<Perm> union(Set<Perm> a, Set<Perm> b) {
        Set<Perm> u = Perm.none();
        u.addAll(a);
        u.addAll(b);
        return u;
    }
}
