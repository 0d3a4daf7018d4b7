package jblockd.block;

/**
 * One user of a node and its {@link Access}: a device, an export, a job, or a parent node
 * (QEMU: one BdrvChild in the node's parents list).
 *
 * @param kind        what sort of user, for blockdev-del's refusals and the root-node check
 * @param description who it is, in QEMU's words ({@code block device 'drive0'},
 *                    {@code an unnamed block device}, {@code stream job 's0'}, {@code node 'mid'})
 * @param role        the child name QEMU shows ({@code root}, {@code backing}, {@code intermediate node})
 * @param blocker     the op-blocker text of a job's node, QEMU block_job_add_bdrv()
 *                    ({@code block device is in use by block job: commit}); null for other users
 */
public record NodeUser(Kind kind, String description, String role, Access access, String blocker,
                       Access insertedAccess) {

    /** A user that QEMU inserts with the access it keeps. */
    public NodeUser(Kind kind, String description, String role, Access access, String blocker) {
        this(kind, description, role, access, blocker, access);
    }

    /**
     * This user as QEMU first inserts it (blk_insert_bs() with the backend's perms of that
     * moment), before narrowing what it shares; the user itself when nothing is narrowed.
     */
    public NodeUser inserted() {
        return insertedAccess.equals(access) ? this
                : new NodeUser(kind, description, role, insertedAccess, blocker, insertedAccess);
    }

    public enum Kind {
        /** A BlockBackend: a device, an export, or a job's own backend (bdrv_has_blk()). */
        BACKEND,
        /** A node a block job keeps (block_job_add_bdrv()): blocks other jobs and blockdev-del. */
        JOB,
        /** A parent node's child link; derived from the graph, never attached. */
        PARENT
    }

    /** A device's BlockBackend: reads, writes when the node is writable, lets others do anything. */
    public static NodeUser device(String name, boolean writable) {
        return new NodeUser(Kind.BACKEND, "block device '" + name + "'", "root", backendAccess(writable), null);
    }

    /**
     * An export's BlockBackend (export.c blk_exp_add(): its backend has no name). It does not
     * share resize: nbd_export_create() takes it away so the size a client was told holds.
     */
    public static NodeUser export(boolean writable) {
        Access a = backendAccess(writable);
        java.util.Set<Perm> shares = java.util.EnumSet.copyOf(a.shares());
        shares.remove(Perm.RESIZE);
        return new NodeUser(Kind.BACKEND, "an unnamed block device", "root", Access.of(a.needs(), shares), null, a);
    }

    /** A job's own BlockBackend on a node (commit's base and top, mirror's target). */
    public static NodeUser jobBackend(Access access) {
        return new NodeUser(Kind.BACKEND, "an unnamed block device", "root", access, null);
    }

    /** A node a job keeps, as block_job_add_bdrv() names it ({@code <type> job '<id>'}). */
    public static NodeUser jobNode(String jobType, String jobId, String role, Access access) {
        return new NodeUser(Kind.JOB, jobType + " job '" + jobId + "'", role, access,
                "block device is in use by block job: " + jobType);
    }

    static NodeUser parent(BlockNode parent, BlockChild child, Access access) {
        return new NodeUser(Kind.PARENT, "node '" + parent.nodeName() + "'", child.role(), access, null);
    }

    private static Access backendAccess(boolean writable) {
        return new Access(writable ? Perm.of(Perm.CONSISTENT_READ, Perm.WRITE) : Perm.of(Perm.CONSISTENT_READ),
                Perm.all());
    }
}
