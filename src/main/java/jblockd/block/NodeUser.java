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
public record NodeUser(Kind kind, String description, String role, Access access, String blocker) {

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

    /** An export's BlockBackend (export.c blk_exp_add(): its backend has no name). */
    public static NodeUser export(boolean writable) {
        return new NodeUser(Kind.BACKEND, "an unnamed block device", "root", backendAccess(writable), null);
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
