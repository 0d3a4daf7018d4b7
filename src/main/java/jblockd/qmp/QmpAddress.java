package jblockd.qmp;

import java.nio.file.Path;

/** Where a QMP server listens: {@code unix:PATH} or {@code tcp:HOST:PORT} (port 0: any free). */
public sealed interface QmpAddress {

    record Unix(Path path) implements QmpAddress {
        @Override
        public String toString() {
            return "unix:" + path;
        }
    }

    record Tcp(String host, int port) implements QmpAddress {
        @Override
        public String toString() {
            return "tcp:" + host + ":" + port;
        }
    }

    /** Parses {@code unix:PATH} / {@code tcp:HOST:PORT} (IPv6 hosts in brackets). */
    static QmpAddress parse(String spec) {
        if (spec.startsWith("unix:")) {
            String p = spec.substring(5);
            int comma = p.indexOf(',');
            if (comma >= 0) {
                p = p.substring(0, comma); // QEMU's ",server=on,wait=off" suffix is implied
            }
            if (p.isEmpty()) {
                throw new IllegalArgumentException("missing path in '" + spec + "'");
            }
            return new Unix(Path.of(p));
        }
        if (spec.startsWith("tcp:")) {
            String hp = spec.substring(4);
            int comma = hp.indexOf(',');
            if (comma >= 0) {
                hp = hp.substring(0, comma);
            }
            int colon = hp.lastIndexOf(':');
            if (colon < 0) {
                throw new IllegalArgumentException("missing port in '" + spec + "'");
            }
            String host = hp.substring(0, colon);
            if (host.startsWith("[") && host.endsWith("]")) {
                host = host.substring(1, host.length() - 1);
            }
            int port;
            try {
                port = Integer.parseInt(hp.substring(colon + 1));
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("invalid port in '" + spec + "'");
            }
            if (port < 0 || port > 65535) {
                throw new IllegalArgumentException("invalid port in '" + spec + "'");
            }
            return new Tcp(host.isEmpty() ? "127.0.0.1" : host, port);
        }
        throw new IllegalArgumentException("expected unix:PATH or tcp:HOST:PORT, got '" + spec + "'");
    }
}
