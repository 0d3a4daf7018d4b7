package jblockd.block;

/**
 * One internal snapshot of an image, as query-block's {@code image.snapshots} shows it
 * (qapi/block-core.json SnapshotInfo).
 *
 * @param vmClockNsec the guest clock at the snapshot, split into vm-clock-sec/-nsec on the wire
 * @param icount      the instruction count, or null when the image records none (QEMU omits it)
 */
public record SnapshotInfo(String id, String name, long vmStateSize, long dateSec, long dateNsec,
                           long vmClockNsec, Long icount) {
}
