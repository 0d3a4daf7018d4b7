package jblockd.block;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;

/**
 * The one place where a filename string becomes block node options, as QEMU 7.2's bdrv_open
 * does it (block.c bdrv_fill_options, bdrv_find_protocol, parse_json_filename): {@code json:}
 * gives the options themselves; otherwise a protocol prefix ({@code name:} with the colon before
 * any slash) picks the protocol driver registered under that name
 * ({@link DriverRegistry#registerProtocol}), which parses the whole string; no prefix is a plain
 * path for the {@code file} driver. A format node goes on top: the one given, else the one the
 * first sector probes as (raw when none matches).
 *
 * <p>Structured options (blockdev-add) never come here: their {@code filename} is literal.
 */
public final class Filenames {

    /**
     * Parses what follows {@code json:} into options (schema validation and the QMP option
     * codec live above the block layer, so the daemon hands them in).
     */
    @FunctionalInterface
    public interface JsonOptions {
        BlockdevOptions decode(String json) throws IOException;
    }

    /** A protocol driver's bdrv_parse_filename: the whole string (prefix included) into its options. */
    @FunctionalInterface
    public interface ProtocolParser {
        BlockdevOptions parse(String filename, BlockdevOptions.Common common, Filenames filenames) throws IOException;
    }

    /** Where no JSON codec is wired (tools that only open plain images). */
    public static final JsonOptions NO_JSON = json -> {
        throw new IoError(Errno.EINVAL, "json: filenames are not available in this tool");
    };

    private static final String JSON_PREFIX = "json:";

    private final DriverRegistry drivers;
    private final JsonOptions json;

    public Filenames(DriverRegistry drivers, JsonOptions json) {
        this.drivers = drivers;
        this.json = json;
    }

    /** util/cutils.c path_has_protocol(): a colon before the first slash. */
    public static boolean hasProtocol(String filename) {
        int colon = filename.indexOf(':');
        int slash = filename.indexOf('/');
        return colon > 0 && (slash < 0 || colon < slash);
    }

    /** The protocol name of a prefixed filename, or null. */
    public static String protocolOf(String filename) {
        return hasProtocol(filename) ? filename.substring(0, filename.indexOf(':')) : null;
    }

    /**
     * QEMU's bdrv_get_full_backing_filename(): a backing name stored in an image is relative to
     * the image's directory as the image's own filename gives it (joined, not normalised), unless
     * it is absolute, has a protocol prefix or is {@code json:}.
     */
    public static String backingFilename(String imageFilename, String backingName) {
        if (hasProtocol(backingName) || backingName.startsWith("/") || imageFilename == null
                || hasProtocol(imageFilename)) {
            return backingName;
        }
        Path parent = Path.of(imageFilename).getParent();
        return parent == null ? backingName : parent.resolve(backingName).toString();
    }

    /**
     * The protocol-level options of a filename: {@code json:} as given (format drivers too),
     * a protocol driver's parse, or the file driver.
     */
    public BlockdevOptions protocolOptions(String filename, BlockdevOptions.Common common) throws IOException {
        if (filename.startsWith(JSON_PREFIX)) {
            return json.decode(filename.substring(JSON_PREFIX.length()));
        }
        String protocol = protocolOf(filename);
        if (protocol == null) {
            // bdrv_find_protocol(): a plain name is host_device when it names a block or
            // character device (hdev_probe_device), else file
            return new BlockdevOptions.File(common, filename, false, BlockdevOptions.Locking.AUTO,
                    FileType.of(Path.of(filename)) == FileType.DEVICE);
        }
        ProtocolParser parser = drivers.protocol(protocol);
        if (parser == null) {
            throw new IoError(Errno.EINVAL, "Unknown protocol '" + protocol + "'");
        }
        return parser.parse(filename, common, this);
    }

    /**
     * The node options for an image filename: a format node ({@code format} null: probed) over
     * its protocol node; a {@code json:} object whose driver is a format is used as it is.
     *
     * @param common     the format node's members (node name, read-only, cache, discard)
     * @param fileCommon the protocol node's (no node name)
     */
    public BlockdevOptions imageOptions(String filename, String format, BlockdevOptions.Common common,
                                        BlockdevOptions.Common fileCommon) throws IOException {
        if (format != null && !drivers.isFormat(format)) {
            throw new IoError(Errno.EINVAL, "Unknown file format '" + format + "'");
        }
        BlockdevOptions proto = protocolOptions(filename, fileCommon);
        if (filename.startsWith(JSON_PREFIX) && format != null && !format.equals(proto.driver())) {
            // bdrv_open joins the JSON under the given driver=format (the caller's keys win):
            // protocol options become the format's, which then has no file
            if (!drivers.isFormat(proto.driver())) {
                throw new IoError(Errno.EINVAL, "A block device must be specified for \"file\"");
            }
            throw new IoError(Errno.EINVAL, "Cannot open json: options of driver '" + proto.driver()
                    + "' as format '" + format + "'");
        }
        if (drivers.isFormat(proto.driver())) {
            return proto;
        }
        String fmt = format != null ? format : probe(proto);
        BlockdevRef fileRef = new BlockdevRef.Inline(proto);
        return switch (fmt) {
            case "raw" -> new BlockdevOptions.Raw(common, fileRef, null, null);
            case "qcow2" -> new BlockdevOptions.Qcow2(common, fileRef, null);
            default -> throw new IoError(Errno.EINVAL, "Unknown file format '" + fmt + "'");
        };
    }

    /**
     * The host path a new image for this filename is created at (bdrv_img_create finds the
     * protocol driver first: only {@code file} creates images here).
     */
    public Path creationPath(String filename) throws IOException {
        if (filename.startsWith(JSON_PREFIX)) {
            // bdrv_img_create parses no JSON: "json" is looked up as a protocol name
            throw new IoError(Errno.EINVAL, "Unknown protocol 'json'");
        }
        BlockdevOptions proto = protocolOptions(filename, BlockdevOptions.Common.defaults());
        if (proto instanceof BlockdevOptions.File f) {
            return Path.of(f.filename());
        }
        throw new IoError(Errno.ENOTSUP, "Protocol driver '" + proto.driver() + "' does not support image creation");
    }

    /**
     * find_image_format(): the first sector through the protocol layer. A missing host file
     * fails here with the text its open would give; other read failures leave the open to report.
     */
    private String probe(BlockdevOptions proto) throws IOException {
        return switch (proto) {
            case BlockdevOptions.File f -> probeFile(Path.of(f.filename()));
            // blkdebug passes reads through to its image (probing happens before any rule is armed)
            case BlockdevOptions.Blkdebug b when b.image() instanceof BlockdevRef.Inline i -> probe(i.options());
            // a remote node is probed by its first sector, read over a connection of its own
            case BlockdevOptions.Nbd n -> probeOpened(n);
            case BlockdevOptions.Rbd r -> probeOpened(r);
            // null-co reads zeroes or garbage: nothing probes as a format
            default -> "raw";
        };
    }

    /** Opens a childless protocol driver just long enough to read the first sector. */
    private String probeOpened(BlockdevOptions proto) throws IOException {
        DriverFactory<BlockdevOptions> factory = drivers.factory(proto.driver());
        OpenContext none = new OpenContext() {
            @Override
            public BlockNode child(BlockdevRef ref, String role, boolean readOnly) throws IOException {
                throw new IoError(Errno.EINVAL, "no children while probing");
            }

            @Override
            public BlockNode openBackingImage(String filename, String format, boolean readOnly) throws IOException {
                throw new IoError(Errno.EINVAL, "no children while probing");
            }
        };
        BlockDriver d = factory.open(withReadOnly(proto), none);
        try {
            long n = Math.min(512, d.length());
            java.nio.ByteBuffer head = java.nio.ByteBuffer.allocate((int) n);
            if (n > 0) {
                d.read(0, head);
            }
            return drivers.probe(head.flip());
        } finally {
            d.close();
        }
    }

    /** A probe only reads: it must not need a writable export. */
    private static BlockdevOptions withReadOnly(BlockdevOptions o) {
        return switch (o) {
            case BlockdevOptions.Nbd n -> n.withCommon(n.common().withReadOnly(true));
            case BlockdevOptions.Rbd r -> r.withCommon(r.common().withReadOnly(true));
            default -> o;
        };
    }

    private String probeFile(Path path) throws IOException {
        if (!Files.exists(path)) {
            throw new IoError(Errno.ENOENT, "Could not open '" + path + "': No such file or directory");
        }
        if (!Files.isRegularFile(path)) {
            return "raw"; // the file driver's open gives QEMU's text for what it is
        }
        try {
            return drivers.probe(path);
        } catch (NoSuchFileException e) {
            throw new IoError(Errno.ENOENT, "Could not open '" + path + "': No such file or directory", e);
        } catch (java.nio.file.AccessDeniedException e) {
            return "raw"; // the open reports "Permission denied"
        }
    }
}
