package jblockd.commands;

import java.io.IOException;
import java.util.List;
import java.util.Optional;
import java.util.OptionalLong;

import com.fasterxml.jackson.annotation.JsonInclude;

import jblockd.block.BackingHeader;
import jblockd.block.BlockDriver;
import jblockd.block.BlockNode;
import jblockd.block.FormatSpecific;
import jblockd.block.SnapshotInfo;

/**
 * The {@code image} member of query-block / query-named-block-nodes (qapi/block-core.json
 * ImageInfo) as QEMU 7.2's block/qapi.c builds it, from the typed facts drivers give
 * ({@link BlockDriver#allocatedFileSize()}, {@link BlockDriver#formatSpecific()}, ...), and the
 * chain rules shared with {@link BlockdevCommands}: a filter's child counts as its backing,
 * query-block looks through implicit filters. Stateless.
 */
public final class ImageInfos {

    private ImageInfos() {
    }

    /**
     * qapi/block-core.json ImageInfo as QEMU 7.2's bdrv_query_image_info() fills it; absent
     * members are omitted as QEMU omits them (no {@code encrypted}/{@code compressed}: jblockd
     * opens neither kind of image).
     */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record ImageInfo(String filename, String format, Boolean dirtyFlag, Long actualSize,
                            long virtualSize, Integer clusterSize, String backingFilename,
                            String fullBackingFilename, String backingFilenameFormat,
                            List<SnapshotInfoWire> snapshots, ImageInfo backingImage,
                            ImageInfoSpecific formatSpecific) {
    }

    /** qapi/block-core.json SnapshotInfo; QEMU splits the guest clock into seconds and nanoseconds. */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record SnapshotInfoWire(String id, String name, long vmStateSize, long dateSec, long dateNsec,
                                   long vmClockSec, long vmClockNsec, Long icount) {
        static SnapshotInfoWire of(SnapshotInfo s) {
            return new SnapshotInfoWire(s.id(), s.name(), s.vmStateSize(), s.dateSec(), s.dateNsec(),
                    s.vmClockNsec() / 1_000_000_000L, s.vmClockNsec() % 1_000_000_000L, s.icount());
        }
    }

    /** qapi/block-core.json Qcow2BitmapInfo. */
    public record Qcow2BitmapInfo(String name, long granularity, List<String> flags) {
    }

    /** qapi/block-core.json ImageInfoSpecific: a union with {@code type} and its {@code data}. */
    public record ImageInfoSpecific(String type, Object data) {
    }

    /** qapi/block-core.json ImageInfoSpecificQCow2 (the members QEMU 7.2 fills for v2 / v3). */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record ImageInfoSpecificQCow2(String compat, Boolean lazyRefcounts, Boolean corrupt,
                                         int refcountBits, Boolean extendedL2, String compressionType,
                                         List<Qcow2BitmapInfo> bitmaps) {
    }

    /** QEMU's bound on chain walks is the graph itself; ours guards against a cycle bug. */
    static final int MAX_CHAIN = 1000;

    /**
     * bdrv_filter_or_cow_bs(): a filter's filtered child, else the COW backing; for query-block
     * implicit filters below are skipped as well.
     */
    static BlockNode next(BlockNode node, boolean skipImplicit) {
        BlockNode f = node.driver().filtered();
        BlockNode n = f != null ? f : node.driver().backing();
        return skipImplicit ? skipImplicit(n) : n;
    }

    /** bdrv_cow_bs(): filters have no COW backing (backing_file is not shown for them). */
    static BlockNode cowBacking(BlockNode node) {
        return node.driver().filtered() != null ? null : node.driver().backing();
    }

    /** block.c bdrv_skip_implicit_filters(). */
    static BlockNode skipImplicit(BlockNode node) {
        BlockNode n = node;
        for (int i = 0; n != null && n.driver().implicitFilter() && i < MAX_CHAIN; i++) {
            n = n.driver().filtered();
        }
        return n;
    }

    /** bs->drv->format_name: a filter shows its own driver name. */
    static String formatOf(BlockDriver d) {
        return d.filtered() != null ? d.driverName() : d.formatName();
    }

    /**
     * block/qapi.c bdrv_query_image_info(), recursing down the chain unless {@code flat};
     * {@code forDevice} (query-block) skips implicit filters in the chain.
     */
    static ImageInfo imageInfo(BlockNode node, boolean flat, boolean forDevice) throws IOException {
        return imageInfo(node, flat, forDevice, 0);
    }

    private static ImageInfo imageInfo(BlockNode node, boolean flat, boolean forDevice, int level)
            throws IOException {
        BlockDriver d = node.driver();
        BlockNode next = next(node, forDevice);
        ImageInfo backingImage = null;
        if (!flat && next != null && level < MAX_CHAIN) {
            backingImage = imageInfo(next, false, forDevice, level + 1);
        }
        // bdrv_get_info() success decides dirty-flag and cluster-size (0 is not shown)
        Boolean dirty = d.dirtyFlag().orElse(null);
        int cluster = d.clusterSize();
        OptionalLong allocated = d.allocatedFileSize();
        Optional<BackingHeader> header = d.backingHeader();
        String backingName = header.map(BackingHeader::filename).orElse(null);
        // bdrv_query_snapshot_info_list() goes through bdrv_snapshot_fallback (raw shows its rbd's)
        Optional<jblockd.block.InternalSnapshots> own = jblockd.block.InternalSnapshots.of(node);
        List<SnapshotInfoWire> snapshots = own.isEmpty() ? List.of()
                : own.get().list().stream().map(SnapshotInfoWire::of).toList();
        return new ImageInfo(d.filename(), formatOf(d), dirty,
                allocated.isPresent() ? allocated.getAsLong() : null, sectorRounded(node.length()),
                dirty != null && cluster > 0 ? cluster : null, backingName,
                backingName == null ? null : fullBackingFilename(d.filename(), backingName),
                header.map(BackingHeader::format).orElse(null), snapshots.isEmpty() ? null : snapshots, backingImage,
                d.formatSpecific().map(ImageInfos::specific).orElse(null));
    }

    /** bdrv_getlength() is bdrv_nb_sectors() * 512: a file's odd length shows rounded up. */
    private static long sectorRounded(long length) {
        return length > Long.MAX_VALUE - 511 ? length : (length + 511) & ~511L;
    }

    private static ImageInfoSpecific specific(FormatSpecific f) {
        return switch (f) {
            case FormatSpecific.Qcow2 q -> new ImageInfoSpecific(q.type(), new ImageInfoSpecificQCow2(q.compat(),
                    q.lazyRefcounts(), q.corrupt(), q.refcountBits(), q.extendedL2(), q.compressionType(),
                    q.bitmaps() == null ? null : q.bitmaps().stream()
                            .map(b -> new Qcow2BitmapInfo(b.name(), b.granularity(), b.flags())).toList()));
            case FormatSpecific.Rbd r -> new ImageInfoSpecific(r.type(), java.util.Map.of());
        };
    }

    /**
     * bdrv_get_full_backing_filename(): an absolute name or one with a protocol prefix stays as
     * written; a relative one is taken relative to the directory of the image's file name
     * (util/cutils.c path_combine()), so a relative image name gives a relative result.
     */
    static String fullBackingFilename(String imageFilename, String backing) {
        if (backing.startsWith("/") || hasProtocol(backing) || imageFilename == null) {
            return backing;
        }
        int slash = imageFilename.lastIndexOf('/');
        return slash < 0 ? backing : imageFilename.substring(0, slash + 1) + backing;
    }

    /** block.c path_has_protocol(): a ':' before any '/'. */
    private static boolean hasProtocol(String name) {
        int colon = name.indexOf(':');
        int slash = name.indexOf('/');
        return colon >= 0 && (slash < 0 || colon < slash);
    }
}
