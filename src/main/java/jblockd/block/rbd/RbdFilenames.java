package jblockd.block.rbd;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import jblockd.block.BlockdevOptions;
import jblockd.block.Errno;
import jblockd.block.IoError;
import jblockd.block.QdictJson;

/**
 * {@code rbd:POOL/[NAMESPACE/]IMAGE[@SNAP][:KEY=VALUE...]} as block/rbd.c
 * qemu_rbd_parse_filename reads it (a backslash escapes the next character; {@code conf} and
 * {@code id} become options, every other pair a cluster setting), and the name QEMU shows for
 * an rbd node (a {@code json:} filename of its options).
 */
final class RbdFilenames {
    private RbdFilenames() {
    }

    static BlockdevOptions.Rbd parse(String filename, BlockdevOptions.Common common) throws IoError {
        if (!filename.startsWith("rbd:")) {
            throw new IoError(Errno.EINVAL, "File name must start with 'rbd:'");
        }
        Cursor c = new Cursor(filename.substring(4));
        String pool = c.token('/');
        if (c.done()) {
            throw new IoError(Errno.EINVAL, "Pool name is required");
        }
        String imageName;
        String snapshot = null;
        if (c.rest().indexOf('@') >= 0) {
            imageName = c.token('@');
            snapshot = unescape(c.token(':'));
        } else {
            imageName = c.token(':');
        }
        String namespace = null;
        Cursor image = new Cursor(imageName);
        String first = image.token('/');
        if (!image.done()) {
            namespace = unescape(first);
            imageName = image.rest();
        }
        String conf = null;
        String user = null;
        List<String[]> pairs = new ArrayList<>();
        while (!c.done()) {
            String name = c.token('=');
            if (c.done()) {
                throw new IoError(Errno.EINVAL, "conf option " + name + " has no value");
            }
            name = unescape(name);
            String value = unescape(c.token(':'));
            switch (name) {
                case "conf" -> conf = value;
                case "id" -> user = value;
                default -> pairs.add(new String[] {name, value});
            }
        }
        return new BlockdevOptions.Rbd(common, unescape(pool), namespace, unescape(imageName), conf, snapshot, user,
                null, null, null, pairs);
    }

    /** qemu_rbd_next_tok: up to an unescaped {@code delim}; the cursor is done when there was none. */
    private static final class Cursor {
        private String s;
        private boolean done;

        Cursor(String s) {
            this.s = s;
        }

        String token(char delim) {
            for (int i = 0; i < s.length(); i++) {
                char ch = s.charAt(i);
                if (ch == delim) {
                    String t = s.substring(0, i);
                    s = s.substring(i + 1);
                    return t;
                }
                if (ch == '\\' && i + 1 < s.length()) {
                    i++;
                }
            }
            String t = s;
            s = "";
            done = true;
            return t;
        }

        boolean done() {
            return done;
        }

        String rest() {
            return s;
        }
    }

    private static String unescape(String s) {
        StringBuilder b = new StringBuilder(s.length());
        for (int i = 0; i < s.length(); i++) {
            char ch = s.charAt(i);
            if (ch == '\\' && i + 1 < s.length()) {
                ch = s.charAt(++i);
            }
            b.append(ch);
        }
        return b.toString();
    }

    /**
     * What query-block shows as the node's file name: QEMU has no rbd refresh_filename, so a
     * {@code json:} of its strong options (block/rbd.c qemu_rbd_strong_runtime_opts: pool,
     * namespace, image, conf, snapshot, user, server.*; not the key or the auth modes) (observed:
     * {@code json:{"pool": "rbd", "image": "t1", "conf": "/c/ceph.conf", "driver": "rbd", "user": "admin"}}).
     */
    static String filename(BlockdevOptions.Rbd o) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("driver", "rbd");
        m.put("pool", o.pool());
        if (o.namespace() != null) {
            m.put("namespace", o.namespace());
        }
        m.put("image", o.image());
        if (o.conf() != null) {
            m.put("conf", o.conf());
        }
        if (o.snapshot() != null) {
            m.put("snapshot", o.snapshot());
        }
        if (o.user() != null) {
            m.put("user", o.user());
        }
        if (o.servers() != null) {
            // a list option is flattened in the options QDict: server.0.host, server.0.port, ...
            for (int i = 0; i < o.servers().size(); i++) {
                m.put("server." + i + ".host", o.servers().get(i)[0]);
                m.put("server." + i + ".port", o.servers().get(i)[1]);
            }
        }
        return QdictJson.filename(m);
    }
}
