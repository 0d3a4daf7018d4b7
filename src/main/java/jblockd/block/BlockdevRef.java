package jblockd.block;

/** A child given to blockdev-add: a reference to an existing node, inline options, or null. */
public sealed interface BlockdevRef {
    /** {@code "child": "node-name"} — an existing node. */
    record Reference(String nodeName) implements BlockdevRef {
    }

    /** {@code "child": { "driver": ... }} — a node opened together with its parent. */
    record Inline(BlockdevOptions options) implements BlockdevRef {
    }

    /** {@code "backing": null} — explicitly no child (qcow2's backing only). */
    record None() implements BlockdevRef {
    }
}
