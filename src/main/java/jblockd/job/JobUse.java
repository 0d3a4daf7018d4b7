package jblockd.job;

import jblockd.block.Access;
import jblockd.block.BlockNode;
import jblockd.block.NodeUser;

/**
 * A node a job uses and how, as the job's start function in QEMU declares it: a node it keeps
 * with {@code block_job_add_bdrv()} (named by role, op-blocked against other jobs and
 * blockdev-del) or a BlockBackend of its own on the node (commit's base, mirror's target).
 */
public record JobUse(BlockNode node, String role, Access access, boolean backend) {

    /** block_job_add_bdrv(job, role, node, perm, shared_perm). */
    public static JobUse node(BlockNode node, String role, Access access) {
        return new JobUse(node, role, access, false);
    }

    /** blk_new(perm, shared_perm) + blk_insert_bs(node) by the job. */
    public static JobUse backend(BlockNode node, Access access) {
        return new JobUse(node, "root", access, true);
    }

    NodeUser userFor(Job job) {
        return backend ? NodeUser.jobBackend(access) : NodeUser.jobNode(job.type().wire(), job.id(), role, access);
    }
}
