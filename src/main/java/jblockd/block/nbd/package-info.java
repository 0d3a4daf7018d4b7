/**
 * The {@code nbd} protocol driver (QEMU 7.2 block/nbd.c; reference/remote.md): a remote NBD
 * export as a block node.
 * <ul>
 *   <li>{@link jblockd.block.nbd.NbdDriver}: the data path by the server's flags, block status,
 *       MULTI_CONN connections;</li>
 *   <li>{@code NbdLink}: one connection kept up (open-timeout retries, background reconnect,
 *       the reconnect-delay window);</li>
 *   <li>{@code NbdConnector}: one attempt, QEMU's texts for each failing step;</li>
 *   <li>{@link jblockd.block.nbd.NbdFilenames}: the filename syntaxes both ways;</li>
 *   <li>{@link jblockd.block.nbd.NbdTimer}: injected time for the retries.</li>
 * </ul>
 * The wire protocol is {@link jblockd.nbd.client.NbdClient}'s.
 */
package jblockd.block.nbd;
