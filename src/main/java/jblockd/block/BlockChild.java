package jblockd.block;

/** A child link of a node: its role ({@code file}, {@code backing}, {@code image}) and the node. */
public record BlockChild(String role, BlockNode node) {
}
