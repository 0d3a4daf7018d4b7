package jblockd.block;

import java.util.List;

/**
 * Typed options of blockdev-add / --blockdev, one record per driver (QEMU's BlockdevOptions
 * union on {@code driver}). The QMP layer builds them from validated JSON; the block layer never
 * sees JSON. Optional members are null when absent.
 */
public sealed interface BlockdevOptions {

    /** Members every driver shares (BlockdevOptions' base in qapi/block-core.json). */
    /**
     * @param detectZeroes QEMU's {@code detect-zeroes} (off | on | unmap): a write whose data is
     *                     all zeroes becomes a write-zeroes on this node, one that may unmap with
     *                     {@code unmap} (block/io.c bdrv_aligned_pwritev)
     */
    record Common(String nodeName, boolean readOnly, boolean cacheDirect, boolean cacheNoFlush,
                  boolean discardUnmap, String detectZeroes) {
        public Common {
            if (!java.util.Set.of("off", "on", "unmap").contains(detectZeroes)) {
                throw new IllegalArgumentException("detect-zeroes " + detectZeroes);
            }
        }

        /** detect-zeroes off, QEMU's default. */
        public Common(String nodeName, boolean readOnly, boolean cacheDirect, boolean cacheNoFlush,
                      boolean discardUnmap) {
            this(nodeName, readOnly, cacheDirect, cacheNoFlush, discardUnmap, "off");
        }

        public static Common defaults() {
            return new Common(null, false, false, false, false);
        }

        public Common withNodeName(String name) {
            return new Common(name, readOnly, cacheDirect, cacheNoFlush, discardUnmap, detectZeroes);
        }

        public Common withReadOnly(boolean ro) {
            return new Common(nodeName, ro, cacheDirect, cacheNoFlush, discardUnmap, detectZeroes);
        }
    }

    Common common();

    /** The QMP driver name. */
    String driver();

    /**
     * @param autoReadOnly QEMU's {@code auto-read-only}: when the file cannot be opened for
     *                     writing (a read-only file system, no write permission) it is opened
     *                     for reading, and a user that needs to write it is refused then
     */
    record File(Common common, String filename, boolean autoReadOnly, Locking locking, boolean hostDevice)
            implements BlockdevOptions {
        public File(Common common, String filename) {
            this(common, filename, false, Locking.AUTO, false);
        }

        public File(Common common, String filename, boolean autoReadOnly) {
            this(common, filename, autoReadOnly, Locking.AUTO, false);
        }

        public File withCommon(Common c) {
            return new File(c, filename, autoReadOnly, locking, hostDevice);
        }

        /** {@code file} for a regular file, {@code host_device} for a block or character device. */
        public String driver() {
            return hostDevice ? "host_device" : "file";
        }
    }

    /**
     * file-posix's {@code locking}: QEMU's OFD byte-range locks on the image for the node's
     * permissions; {@code AUTO} locks where OFD locks work.
     */
    enum Locking { AUTO, ON, OFF }

    record Raw(Common common, BlockdevRef file, Long offset, Long size) implements BlockdevOptions {
        public String driver() {
            return "raw";
        }
    }

    /** {@code backing} null: open the backing file named in the image header. */
    record Qcow2(Common common, BlockdevRef file, BlockdevRef backing, Qcow2Runtime runtime)
            implements BlockdevOptions {
        public Qcow2 {
            runtime = runtime == null ? Qcow2Runtime.DEFAULTS : runtime;
        }

        /** With every runtime option at its default. */
        public Qcow2(Common common, BlockdevRef file, BlockdevRef backing) {
            this(common, file, backing, Qcow2Runtime.DEFAULTS);
        }

        public String driver() {
            return "qcow2";
        }
    }

    /**
     * BlockdevOptionsQcow2's runtime options jblockd honours (null: not given): the metadata
     * cache sizes in bytes (QEMU's read_cache_sizes rules), the seconds after which unused cache
     * entries are dropped ({@code cache-clean-interval}, 0 never), and whether freed clusters
     * are discarded in the file for a guest's request ({@code pass-discard-request}, default: the
     * node's {@code discard=unmap}) and for other reasons ({@code pass-discard-other}, default
     * off). {@code pass-discard-snapshot} never applies (jblockd deletes no snapshots).
     */
    record Qcow2Runtime(Long cacheSize, Long l2CacheSize, Long l2CacheEntrySize, Long refcountCacheSize,
                        Long cacheCleanInterval, Boolean passDiscardRequest, Boolean passDiscardOther) {
        public static final Qcow2Runtime DEFAULTS = new Qcow2Runtime(null, null, null, null, null, null, null);
    }

    /**
     * One {@code inject-error} rule of blkdebug (BlkdebugInjectErrorOptions). {@code state}: the
     * blkdebug state the rule is armed in (null: any); {@code immediately}: QEMU fails the
     * request without first yielding to the event loop, which is not observable here.
     */
    record InjectError(String event, Integer errno, Long sector, boolean once, String iotype, Long state,
                       boolean immediately) {
        public InjectError(String event, Integer errno, Long sector, boolean once, String iotype) {
            this(event, errno, sector, once, iotype, null, false);
        }
    }

    /** One {@code set-state} rule of blkdebug (BlkdebugSetStateOptions); {@code state} null: any. */
    record SetState(String event, Long state, long newState) {
    }

    record Blkdebug(Common common, BlockdevRef image, String config, List<InjectError> injectError,
                    Integer align, List<SetState> setState) implements BlockdevOptions {
        public Blkdebug {
            setState = setState == null ? List.of() : List.copyOf(setState);
        }

        public Blkdebug(Common common, BlockdevRef image, String config, List<InjectError> injectError,
                        Integer align) {
            this(common, image, config, injectError, align, List.of());
        }

        public String driver() {
            return "blkdebug";
        }
    }

    /**
     * {@code sizeGiven} / {@code readZeroesGiven}: the member was in the options (QEMU then names
     * the node {@code json:{...}} instead of {@code null-co://}).
     */
    record NullCo(Common common, long size, boolean readZeroes, boolean sizeGiven, boolean readZeroesGiven)
            implements BlockdevOptions {
        public NullCo(Common common, long size, boolean readZeroes) {
            this(common, size, readZeroes, false, false);
        }

        public String driver() {
            return "null-co";
        }
    }

    /** A dirty bitmap named by node and name (QAPI BlockDirtyBitmap). */
    record BitmapRef(String node, String name) {
    }

    /**
     * BlockdevOptionsCbw: {@code file} is the source, {@code target} receives the old data;
     * {@code bitmap} null: every cluster; {@code onCbwError} null: break-guest-write;
     * {@code cbwTimeout} null: no timeout (seconds).
     */
    record CopyBeforeWrite(Common common, BlockdevRef file, BlockdevRef target, BitmapRef bitmap,
                           String onCbwError, Long cbwTimeout) implements BlockdevOptions {
        public String driver() {
            return "copy-before-write";
        }
    }

    /** snapshot-access (BlockdevOptionsGenericFormat): the point-in-time view of a copy-before-write {@code file}. */
    record SnapshotAccess(Common common, BlockdevRef file) implements BlockdevOptions {
        public String driver() {
            return "snapshot-access";
        }
    }

    /**
     * Where an NBD server listens: the flat SocketAddress of BlockdevOptionsNbd (qapi/sockets.json);
     * the types jblockd can connect to (vsock and fd are refused before a record exists).
     */
    sealed interface NbdServer {
        /**
         * {@code port} is a string in QEMU's schema (a service name or number);
         * {@code keepAlive}: SO_KEEPALIVE on the connection (InetSocketAddress keep-alive).
         */
        record Inet(String host, String port, boolean keepAlive) implements NbdServer {
            public Inet(String host, String port) {
                this(host, port, false);
            }
        }

        record Unix(String path) implements NbdServer {
        }
    }

    /**
     * BlockdevOptionsNbd (qapi/block-core.json, QEMU 7.2): {@code export} null is the server's
     * default export ""; {@code reconnectDelay} and {@code openTimeout} in seconds (0: none);
     * {@code xDirtyBitmap} a meta context reported instead of base:allocation; {@code autoReadOnly}:
     * a read-only export makes a read-only node instead of failing the open.
     */
    record Nbd(Common common, NbdServer server, String export, String tlsCreds, String tlsHostname,
               long reconnectDelay, long openTimeout, String xDirtyBitmap, boolean autoReadOnly)
            implements BlockdevOptions {
        /** Without {@code auto-read-only}. */
        public Nbd(Common common, NbdServer server, String export, String tlsCreds, String tlsHostname,
                   long reconnectDelay, long openTimeout, String xDirtyBitmap) {
            this(common, server, export, tlsCreds, tlsHostname, reconnectDelay, openTimeout, xDirtyBitmap, false);
        }

        public Nbd withCommon(Common c) {
            return new Nbd(c, server, export, tlsCreds, tlsHostname, reconnectDelay, openTimeout, xDirtyBitmap,
                    autoReadOnly);
        }

        public String driver() {
            return "nbd";
        }
    }

    /**
     * BlockdevOptionsRbd (qapi/block-core.json, QEMU 7.2). {@code servers}: monitor addresses
     * ({@code host}, {@code port} strings) given instead of a conf file's {@code mon host};
     * {@code authClientRequired}: cephx / none; {@code keySecret}: the id of a {@code secret}
     * object holding the key; {@code confPairs}: other {@code key=value} pairs of an
     * {@code rbd:} filename, set on the cluster handle as QEMU does.
     */
    record Rbd(Common common, String pool, String namespace, String image, String conf, String snapshot,
               String user, List<String> authClientRequired, String keySecret, List<String[]> servers,
               List<String[]> confPairs) implements BlockdevOptions {
        public Rbd {
            authClientRequired = authClientRequired == null ? null : List.copyOf(authClientRequired);
            servers = servers == null ? null : List.copyOf(servers);
            confPairs = confPairs == null ? List.of() : List.copyOf(confPairs);
        }

        public Rbd withCommon(Common c) {
            return new Rbd(c, pool, namespace, image, conf, snapshot, user, authClientRequired, keySecret, servers,
                    confPairs);
        }

        public String driver() {
            return "rbd";
        }
    }
}
