package jblockd.block;

import java.io.IOException;
import java.util.Optional;
import java.util.OptionalLong;

/**
 * A filter over one child node (blkdebug, copy-before-write, a job's top filter): it has no
 * image facts of its own, so query-block's cluster size, dirty flag and allocated size are its
 * child's, as QEMU's bdrv_get_info() / bdrv_get_allocated_file_size() ask the filtered child.
 * Implementations say which child with {@link #filtered()} (never null) and write their own I/O.
 */
public interface FilterDriver extends BlockDriver {

    @Override
    BlockNode filtered();

    @Override
    default int clusterSize() {
        return filtered().driver().clusterSize();
    }

    @Override
    default Optional<Boolean> dirtyFlag() {
        return filtered().driver().dirtyFlag();
    }

    @Override
    default OptionalLong allocatedFileSize() throws IOException {
        return filtered().driver().allocatedFileSize();
    }
}
