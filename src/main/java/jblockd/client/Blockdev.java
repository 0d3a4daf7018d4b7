package jblockd.client;

/**
 * Arguments of {@code blockdev-add} (BlockdevOptions): a node by driver. The shortcuts cover
 * the common stacks; anything else via {@link #set}.
 *
 * <pre>{@code
 * qmp.block().blockdevAdd(Blockdev.qcow2("disk", Blockdev.file("disk-file", "/images/disk.qcow2")));
 * }</pre>
 */
public final class Blockdev extends QmpArgs<Blockdev> {

    private Blockdev(String driver, String nodeName) {
        set("driver", driver);
        set("node-name", nodeName);
    }

    public static Blockdev of(String driver, String nodeName) {
        return new Blockdev(driver, nodeName);
    }

    /** A {@code file} protocol node over {@code path}. */
    public static Blockdev file(String nodeName, String path) {
        return of("file", nodeName).set("filename", path);
    }

    /** A {@code raw} format node over a child given inline. */
    public static Blockdev raw(String nodeName, Blockdev file) {
        return of("raw", nodeName).set("file", file.toJson());
    }

    /** A {@code raw} format node over an existing node. */
    public static Blockdev raw(String nodeName, String fileNode) {
        return of("raw", nodeName).set("file", fileNode);
    }

    /** A {@code qcow2} format node over a child given inline. */
    public static Blockdev qcow2(String nodeName, Blockdev file) {
        return of("qcow2", nodeName).set("file", file.toJson());
    }

    /** A {@code qcow2} format node over an existing node. */
    public static Blockdev qcow2(String nodeName, String fileNode) {
        return of("qcow2", nodeName).set("file", fileNode);
    }

    public Blockdev readOnly(boolean b) {
        return set("read-only", b);
    }

    public String nodeName() {
        return (String) get("node-name");
    }
}
