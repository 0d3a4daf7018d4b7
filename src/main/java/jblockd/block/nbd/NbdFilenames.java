package jblockd.block.nbd;

import java.net.URI;
import java.net.URISyntaxException;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;

import jblockd.block.BlockdevOptions;
import jblockd.block.Errno;
import jblockd.block.IoError;

/**
 * The nbd driver's filename syntaxes, both ways (QEMU 7.2 block/nbd.c nbd_parse_filename,
 * nbd_parse_uri, nbd_refresh_filename; reference/remote.md §2):
 * <pre>
 *   nbd://HOST[:PORT]/EXPORT, nbd+tcp://...   inet, port 10809 when absent, no query
 *   nbd+unix:///EXPORT?socket=PATH            unix, no host, socket the only query parameter
 *   nbd:unix:PATH[:exportname=E]              legacy unix
 *   nbd:HOST:PORT[:exportname=E]              legacy inet (util/qemu-sockets.c inet_parse)
 * </pre>
 * A URI path without its leading slash is the export; an empty one means no {@code export}
 * (the server's default). Stateless.
 */
public final class NbdFilenames {
    /** NBD_DEFAULT_PORT (include/block/nbd.h). */
    static final int DEFAULT_PORT = 10809;
    private static final String EXPORT_OPT = ":exportname=";
    private static final String BAD_URL = "No valid URL specified";

    private NbdFilenames() {
    }

    /** bdrv_parse_filename of the nbd, nbd+tcp and nbd+unix protocol drivers. */
    public static BlockdevOptions.Nbd parse(String filename, BlockdevOptions.Common common) throws IoError {
        return filename.contains("://") ? parseUri(filename, common) : parseLegacy(filename, common);
    }

    private static BlockdevOptions.Nbd parseUri(String filename, BlockdevOptions.Common common) throws IoError {
        URI uri;
        try {
            uri = new URI(filename);
        } catch (URISyntaxException e) {
            throw new IoError(Errno.EINVAL, BAD_URL);
        }
        boolean unix = switch (String.valueOf(uri.getScheme())) {
            case "nbd", "nbd+tcp" -> false;
            case "nbd+unix" -> true;
            default -> throw new IoError(Errno.EINVAL, BAD_URL);
        };
        String path = uri.getPath() == null ? "" : uri.getPath();
        String export = path.startsWith("/") ? path.substring(1) : path;
        String[] query = uri.getRawQuery() == null || uri.getRawQuery().isEmpty() ? new String[0]
                : uri.getRawQuery().split("[&;]", -1);
        // query_params_parse: at most one parameter, required for unix, none for inet
        if (query.length > 1 || unix != (query.length == 1)) {
            throw new IoError(Errno.EINVAL, BAD_URL);
        }
        BlockdevOptions.NbdServer server;
        if (unix) {
            String[] kv = query[0].split("=", 2);
            if (uri.getRawAuthority() != null || !kv[0].equals("socket")) {
                throw new IoError(Errno.EINVAL, BAD_URL);
            }
            server = new BlockdevOptions.NbdServer.Unix(kv.length > 1 ? decode(kv[1]) : "");
        } else {
            String host = uri.getHost();
            if (host == null) { // no server, or an authority that is not host[:port] (a bad port)
                throw new IoError(Errno.EINVAL, BAD_URL);
            }
            if (host.startsWith("[") && host.endsWith("]")) {
                host = host.substring(1, host.length() - 1);
            }
            int port = uri.getPort() > 0 ? uri.getPort() : DEFAULT_PORT;
            server = new BlockdevOptions.NbdServer.Inet(host, Integer.toString(port));
        }
        return new BlockdevOptions.Nbd(common, server, export.isEmpty() ? null : export, null, null, 0, 0, null);
    }

    private static String decode(String s) {
        return URLDecoder.decode(s.replace("+", "%2B"), StandardCharsets.UTF_8);
    }

    private static BlockdevOptions.Nbd parseLegacy(String filename, BlockdevOptions.Common common) throws IoError {
        String file = filename;
        String export = null;
        int en = file.indexOf(EXPORT_OPT);
        if (en >= 0) {
            export = file.substring(en + EXPORT_OPT.length());
            file = file.substring(0, en);
            if (export.isEmpty()) {
                throw new IoError(Errno.EINVAL, "NBD server address missing");
            }
        }
        if (!file.startsWith("nbd:")) {
            throw new IoError(Errno.EINVAL, "File name string for NBD must start with 'nbd:'");
        }
        String spec = file.substring("nbd:".length());
        if (spec.isEmpty()) {
            throw new IoError(Errno.EINVAL, "NBD server address missing");
        }
        BlockdevOptions.NbdServer server;
        if (spec.startsWith("unix:")) {
            server = new BlockdevOptions.NbdServer.Unix(spec.substring("unix:".length()));
        } else {
            server = inetParse(spec);
        }
        return new BlockdevOptions.Nbd(common, server, export, null, null, 0, 0, null);
    }

    /**
     * inet_parse(): {@code HOST:PORT} or {@code [V6]:PORT}; the port is everything up to a comma
     * (so {@code localhost:1:foo=e} has the port {@code 1:foo=e}, which resolution then refuses,
     * as QEMU does). QEMU's {@code ,ipv4}-style suffixes are not taken.
     */
    private static BlockdevOptions.NbdServer.Inet inetParse(String spec) throws IoError {
        String host;
        String rest;
        if (spec.startsWith("[")) {
            int close = spec.indexOf(']');
            if (close < 0 || close + 1 >= spec.length() || spec.charAt(close + 1) != ':') {
                throw new IoError(Errno.EINVAL, "error parsing IPv6 address '" + spec + "'");
            }
            host = spec.substring(1, close);
            rest = spec.substring(close + 2);
        } else {
            int colon = spec.indexOf(':');
            if (colon < 0 || colon + 1 >= spec.length()) {
                throw new IoError(Errno.EINVAL, "error parsing address '" + spec + "'");
            }
            host = spec.substring(0, colon);
            rest = spec.substring(colon + 1);
        }
        if (rest.contains(",")) {
            throw new IoError(Errno.EINVAL, "jblockd does not take socket options (',...') in nbd: filenames: '"
                    + spec + "'");
        }
        return new BlockdevOptions.NbdServer.Inet(host, rest);
    }

    /**
     * nbd_refresh_filename(): {@code nbd://HOST:PORT[/EXPORT]} or
     * {@code nbd+unix://[/EXPORT]?socket=PATH}, the export only when one was given.
     */
    public static String filename(BlockdevOptions.NbdServer server, String export) {
        return switch (server) {
            case BlockdevOptions.NbdServer.Inet i -> "nbd://" + i.host() + ":" + i.port()
                    + (export == null ? "" : "/" + export);
            case BlockdevOptions.NbdServer.Unix u -> export == null ? "nbd+unix://?socket=" + u.path()
                    : "nbd+unix:///" + export + "?socket=" + u.path();
        };
    }
}
