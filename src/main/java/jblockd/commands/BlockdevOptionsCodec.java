package jblockd.commands;

import java.util.ArrayList;
import java.util.List;

import com.fasterxml.jackson.databind.JsonNode;

import jblockd.block.BlockdevOptions;
import jblockd.block.BlockdevRef;
import jblockd.qapi.QmpError;

/**
 * Builds {@link BlockdevOptions} from schema-validated blockdev-add arguments (qapi/block-core.json
 * BlockdevOptions): the only place where the block layer's option records meet JSON. The input
 * has already passed {@code QapiValidator}, so types are right; this class adds QEMU's semantic
 * checks (node names) and defaults.
 */
public final class BlockdevOptionsCodec {
    /** null-co's default size (block/null.c: 1 GiB). */
    public static final long NULL_CO_DEFAULT_SIZE = jblockd.block.nullco.NullCoDriver.DEFAULT_SIZE;
    /** QEMU: node names are at most 31 characters (block.c bdrv_assign_node_name). */
    private static final int MAX_NODE_NAME = 31;

    private BlockdevOptionsCodec() {
    }

    public static BlockdevOptions decode(JsonNode o) throws QmpError {
        return decode(o, Inherited.NONE);
    }

    /**
     * What an inline child takes from its parent when it does not set it itself (block.c
     * bdrv_inherited_options / bdrv_backing_options): {@code discard} for a protocol child only,
     * {@code cache.direct} and {@code cache.no-flush} for every child (a qcow2 node's
     * {@code cache.no-flush} would otherwise not stop its flush from reaching the file).
     * Null: not set by any ancestor.
     */
    private record Inherited(String discard, Boolean cacheDirect, Boolean cacheNoFlush, Boolean autoReadOnly) {
        static final Inherited NONE = new Inherited(null, null, null, null);

        /** For a file/image child of node {@code o}. */
        Inherited forFileChild(JsonNode o) {
            return new Inherited(BlockdevOptionsCodec.discard(o, discard),
                    BlockdevOptionsCodec.cacheDirect(o, this), BlockdevOptionsCodec.cacheNoFlush(o, this),
                    BlockdevOptionsCodec.autoReadOnly(o, this));
        }

        /** For a backing child of node {@code o}: discard is not inherited. */
        Inherited forBackingChild(JsonNode o) {
            return new Inherited(null, BlockdevOptionsCodec.cacheDirect(o, this),
                    BlockdevOptionsCodec.cacheNoFlush(o, this), BlockdevOptionsCodec.autoReadOnly(o, this));
        }
    }

    /**
     * The node's own {@code auto-read-only}, else the inherited one (block.c
     * bdrv_inherited_options copies it to file and backing children); null: neither.
     */
    private static Boolean autoReadOnly(JsonNode o, Inherited inherited) {
        JsonNode v = o.get("auto-read-only");
        return v != null ? Boolean.valueOf(v.asBoolean()) : inherited.autoReadOnly();
    }

    /**
     * file's {@code aio}, {@code aio-max-batch} and {@code drop-cache} (file-posix.c raw_open_common):
     * jblockd has one I/O engine for every value (the JDK's positional file channel I/O on a
     * thread per request, O_DIRECT with cache.direct=on), batches nothing and never migrates, so
     * they do not change how it runs (README); what QEMU refuses is refused with its text.
     */
    private static void checkAio(JsonNode o, Inherited inherited) throws QmpError {
        if ("native".equals(o.path("aio").asText(null)) && !Boolean.TRUE.equals(cacheDirect(o, inherited))) {
            throw QmpError.generic("aio=native was specified, but it requires cache.direct=on, which was not "
                    + "specified.");
        }
    }

    private static BlockdevOptions decode(JsonNode o, Inherited inherited) throws QmpError {
        BlockdevOptions.Common common = common(o, inherited);
        Inherited toFile = inherited.forFileChild(o);
        String driver = o.get("driver").asText();
        return switch (driver) {
            case "file", "host_device" -> {
                checkAio(o, inherited);
                yield new BlockdevOptions.File(common, o.get("filename").asText(),
                        Boolean.TRUE.equals(autoReadOnly(o, inherited)),
                        BlockdevOptions.Locking.valueOf(o.path("locking").asText("auto").toUpperCase(java.util.Locale.ROOT)),
                        driver.equals("host_device"));
            }
            case "raw" -> new BlockdevOptions.Raw(common, ref(o.get("file"), toFile), optLong(o, "offset"),
                    optLong(o, "size"));
            case "qcow2" -> new BlockdevOptions.Qcow2(common, ref(o.get("file"), toFile),
                    o.has("backing") ? ref(o.get("backing"), inherited.forBackingChild(o)) : null, qcow2Runtime(o));
            case "blkdebug" -> blkdebug(common, o, toFile);
            case "copy-before-write" -> new BlockdevOptions.CopyBeforeWrite(common, ref(o.get("file"), toFile),
                    ref(o.get("target"), toFile),
                    o.has("bitmap") ? new BlockdevOptions.BitmapRef(o.get("bitmap").get("node").asText(),
                            o.get("bitmap").get("name").asText()) : null,
                    o.has("on-cbw-error") ? o.get("on-cbw-error").asText() : null, optLong(o, "cbw-timeout"));
            case "snapshot-access" -> new BlockdevOptions.SnapshotAccess(common, ref(o.get("file"), toFile));
            case "nbd" -> nbd(common, o, inherited);
            case "rbd" -> rbd(common, o);
            case "null-co" -> {
                long size = o.has("size") ? o.get("size").asLong() : NULL_CO_DEFAULT_SIZE;
                if (size < 0) {
                    throw QmpError.generic("Parameter 'size' expects a non-negative number below 2^64");
                }
                yield new BlockdevOptions.NullCo(common, size, o.path("read-zeroes").asBoolean(false),
                        o.has("size"), o.has("read-zeroes"));
            }
            default -> throw QmpError.generic("Unknown driver '" + driver + "'");
        };
    }

    /**
     * BlockdevOptionsNbd. The server's SocketAddress types jblockd cannot connect to (vsock, fd)
     * and the inet members that only change how QEMU resolves or listens are refused, not ignored.
     */
    private static BlockdevOptions nbd(BlockdevOptions.Common common, JsonNode o, Inherited inherited)
            throws QmpError {
        JsonNode s = o.get("server");
        String type = s.get("type").asText();
        BlockdevOptions.NbdServer server = switch (type) {
            case "inet" -> {
                for (String m : new String[] {"numeric", "to", "ipv4", "ipv6", "mptcp"}) {
                    if (s.has(m)) {
                        throw QmpError.generic("jblockd's nbd driver does not support 'server." + m + "'");
                    }
                }
                yield new BlockdevOptions.NbdServer.Inet(s.get("host").asText(), s.get("port").asText(),
                        s.path("keep-alive").asBoolean(false));
            }
            case "unix" -> {
                if (s.path("abstract").asBoolean(false)) {
                    throw QmpError.generic("jblockd's nbd driver cannot connect to abstract unix sockets");
                }
                yield new BlockdevOptions.NbdServer.Unix(s.get("path").asText());
            }
            default -> throw QmpError.generic("jblockd's nbd driver connects over inet and unix sockets only: "
                    + "server type '" + type + "' is not supported");
        };
        return new BlockdevOptions.Nbd(common, server, o.has("export") ? o.get("export").asText() : null,
                o.has("tls-creds") ? o.get("tls-creds").asText() : null,
                o.has("tls-hostname") ? o.get("tls-hostname").asText() : null,
                o.path("reconnect-delay").asLong(0), o.path("open-timeout").asLong(0),
                o.has("x-dirty-bitmap") ? o.get("x-dirty-bitmap").asText() : null,
                Boolean.TRUE.equals(autoReadOnly(o, inherited)));
    }

    /**
     * BlockdevOptionsQcow2's runtime options: the cache sizes, cache-clean-interval and the
     * discard passing are honoured (checked at open with QEMU's texts, where the image's sizes
     * are known); what jblockd's qcow2 does not do is refused here, not ignored.
     */
    private static BlockdevOptions.Qcow2Runtime qcow2Runtime(JsonNode o) throws QmpError {
        if (o.path("lazy-refcounts").asBoolean(false)) {
            throw QmpError.generic("jblockd's qcow2 updates refcounts at once: lazy-refcounts=on is not supported");
        }
        if (o.has("overlap-check")) {
            JsonNode c = o.get("overlap-check");
            boolean none = c.isTextual() ? c.asText().equals("none") : c.path("template").asText("cached").equals("none");
            if (c.isObject()) {
                java.util.Iterator<java.util.Map.Entry<String, JsonNode>> it = c.fields();
                while (it.hasNext()) {
                    java.util.Map.Entry<String, JsonNode> f = it.next();
                    none &= f.getKey().equals("template") || !f.getValue().asBoolean();
                }
            }
            if (!none) {
                throw QmpError.generic("jblockd's qcow2 does not check its writes against the image's metadata:"
                        + " overlap-check can only be 'none'");
            }
        }
        if (o.has("encrypt")) {
            throw QmpError.generic("jblockd does not open encrypted qcow2 images ('encrypt')");
        }
        if (o.has("data-file")) {
            throw QmpError.generic("jblockd does not support qcow2 images with an external data file ('data-file')");
        }
        return new BlockdevOptions.Qcow2Runtime(optLong(o, "cache-size"), optLong(o, "l2-cache-size"),
                optLong(o, "l2-cache-entry-size"), optLong(o, "refcount-cache-size"),
                optLong(o, "cache-clean-interval"),
                o.has("pass-discard-request") ? o.get("pass-discard-request").asBoolean() : null,
                o.has("pass-discard-other") ? o.get("pass-discard-other").asBoolean() : null);
    }

    /** BlockdevOptionsRbd; {@code encrypt} (librbd's LUKS) is refused, not ignored. */
    private static BlockdevOptions rbd(BlockdevOptions.Common common, JsonNode o) throws QmpError {
        if (o.has("encrypt")) {
            throw QmpError.generic("jblockd's rbd driver does not support 'encrypt' (librbd's LUKS formats) yet");
        }
        List<String> auth = null;
        if (o.has("auth-client-required")) {
            auth = new ArrayList<>();
            for (JsonNode m : o.get("auth-client-required")) {
                auth.add(m.asText());
            }
        }
        List<String[]> servers = null;
        if (o.has("server")) {
            servers = new ArrayList<>();
            for (JsonNode m : o.get("server")) {
                servers.add(new String[] {m.get("host").asText(), m.get("port").asText()});
            }
        }
        return new BlockdevOptions.Rbd(common, o.get("pool").asText(), text(o, "namespace"), o.get("image").asText(),
                text(o, "conf"), text(o, "snapshot"), text(o, "user"), auth, text(o, "key-secret"), servers, null);
    }

    private static String text(JsonNode o, String key) {
        return o.has(key) && !o.get(key).isNull() ? o.get(key).asText() : null;
    }

    private static BlockdevOptions blkdebug(BlockdevOptions.Common common, JsonNode o, Inherited toImage)
            throws QmpError {
        List<BlockdevOptions.InjectError> rules = new ArrayList<>();
        for (JsonNode r : o.path("inject-error")) {
            rules.add(new BlockdevOptions.InjectError(
                    r.get("event").asText(),
                    r.has("errno") ? r.get("errno").asInt() : null,
                    r.has("sector") ? r.get("sector").asLong() : null,
                    r.path("once").asBoolean(false),
                    r.has("iotype") ? r.get("iotype").asText() : null,
                    optLong(r, "state"),
                    r.path("immediately").asBoolean(false)));
        }
        List<BlockdevOptions.SetState> states = new ArrayList<>();
        for (JsonNode r : o.path("set-state")) {
            states.add(new BlockdevOptions.SetState(r.get("event").asText(), optLong(r, "state"),
                    r.get("new_state").asLong()));
        }
        return new BlockdevOptions.Blkdebug(common, ref(o.get("image"), toImage),
                o.has("config") ? o.get("config").asText() : null, List.copyOf(rules),
                o.has("align") ? o.get("align").asInt() : null, states);
    }

    /** The node's own discard option, else the inherited one, else QEMU's default ignore. */
    private static String discard(JsonNode o, String inherited) {
        return o.has("discard") ? o.get("discard").asText() : inherited != null ? inherited : "ignore";
    }

    /** The node's own {@code cache.direct}, else the inherited one (null: neither). */
    private static Boolean cacheDirect(JsonNode o, Inherited inherited) {
        JsonNode v = o.path("cache").get("direct");
        return v != null ? Boolean.valueOf(v.asBoolean()) : inherited.cacheDirect();
    }

    /** The node's own {@code cache.no-flush}, else the inherited one (null: neither). */
    private static Boolean cacheNoFlush(JsonNode o, Inherited inherited) {
        JsonNode v = o.path("cache").get("no-flush");
        return v != null ? Boolean.valueOf(v.asBoolean()) : inherited.cacheNoFlush();
    }

    private static BlockdevOptions.Common common(JsonNode o, Inherited inherited) throws QmpError {
        String nodeName = o.has("node-name") ? o.get("node-name").asText() : null;
        if (nodeName != null) {
            checkNodeName(nodeName);
        }
        boolean readOnly = o.path("read-only").asBoolean(false);
        // block.c bdrv_fill_options(): sharing every permission is only safe for a reader
        if (o.path("force-share").asBoolean(false) && !readOnly) {
            throw QmpError.generic("force-share=on can only be used with read-only images");
        }
        String detectZeroes = o.path("detect-zeroes").asText("off");
        // block.c bdrv_open_common() checks this first (observed on QEMU 7.2)
        if (detectZeroes.equals("unmap") && !"unmap".equals(discard(o, inherited.discard()))) {
            throw QmpError.generic("setting detect-zeroes to unmap is not allowed without setting discard "
                    + "operation to unmap");
        }
        return new BlockdevOptions.Common(nodeName,
                readOnly,
                Boolean.TRUE.equals(cacheDirect(o, inherited)),
                Boolean.TRUE.equals(cacheNoFlush(o, inherited)),
                "unmap".equals(discard(o, inherited.discard())), detectZeroes);
    }

    /** block.c bdrv_assign_node_name(): id_wellformed() and a length bound. */
    public static void checkNodeName(String name) throws QmpError {
        if (!wellFormed(name)) {
            throw QmpError.generic("Invalid node-name: '" + name + "'");
        }
        if (name.length() > MAX_NODE_NAME) {
            throw QmpError.generic("Node name too long");
        }
    }

    /** util/id.c id_wellformed(): a letter, then letters, digits, '-', '.', '_'. */
    public static boolean wellFormed(String id) {
        if (id.isEmpty() || !isAsciiLetter(id.charAt(0))) {
            return false;
        }
        for (int i = 1; i < id.length(); i++) {
            char c = id.charAt(i);
            if (!isAsciiLetter(c) && !(c >= '0' && c <= '9') && c != '-' && c != '.' && c != '_') {
                return false;
            }
        }
        return true;
    }

    private static boolean isAsciiLetter(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    }

    private static BlockdevRef ref(JsonNode v, Inherited inherited) throws QmpError {
        if (v == null || v.isNull()) {
            return new BlockdevRef.None();
        }
        if (v.isTextual()) {
            return new BlockdevRef.Reference(v.asText());
        }
        return new BlockdevRef.Inline(decode(v, inherited));
    }

    private static Long optLong(JsonNode o, String name) {
        return o.has(name) ? o.get(name).asLong() : null;
    }
}
