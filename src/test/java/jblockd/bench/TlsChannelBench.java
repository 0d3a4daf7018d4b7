package jblockd.bench;

import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;

import jblockd.tls.TlsChannel;
import jblockd.tls.X509Credentials;

/**
 * Throughput of one {@link TlsChannel} pipe, both ends in this JVM over a UNIX socket, with the
 * NBD code's buffer shapes (2 MiB writes, a 4 MiB direct read buffer): what the TLS layer alone
 * costs, apart from the NBD protocol and the disks. Prints the rate of every GiB, so the JIT's
 * warm-up shows in the first lines.
 * <pre>
 *   TlsChannelBench PKI_DIR [GIB]     (PKI_DIR holds server/ and client/ with QEMU's file names)
 * </pre>
 * Measured here: 1.35-1.41 GB/s steady with direct record buffers, 1.77-1.89 GB/s with heap
 * ones, yet heap buffers made the real TLS mirror slower (see TlsChannel): this pipe alone does
 * not predict the NBD path. Not a unit test.
 */
public final class TlsChannelBench {
    private TlsChannelBench() {
    }

    public static void main(String[] args) throws Exception {
        Path pki = Path.of(args[0]);
        long total = (args.length > 1 ? Long.parseLong(args[1]) : 6) << 30;
        X509Credentials srv = X509Credentials.load(pki.resolve("server"), X509Credentials.Endpoint.SERVER, true, true);
        X509Credentials cli = X509Credentials.load(pki.resolve("client"), X509Credentials.Endpoint.CLIENT, true, true);
        Path sock = Files.createTempDirectory("tlsbench").resolve("s.sock");
        try (ServerSocketChannel ss = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            ss.bind(UnixDomainSocketAddress.of(sock));
            Thread reader = Thread.ofPlatform().start(() -> {
                try (SocketChannel c = ss.accept()) {
                    TlsChannel t = TlsChannel.handshake(c, srv.serverEngine());
                    ByteBuffer b = ByteBuffer.allocateDirect(4 << 20);
                    long n = 0;
                    long start = System.nanoTime();
                    long mark = start;
                    long next = 1L << 30;
                    while (true) {
                        b.clear();
                        int r = t.read(b);
                        if (r < 0) {
                            break;
                        }
                        n += r;
                        if (n >= next) {
                            long now = System.nanoTime();
                            System.out.printf("%d GiB at %.2f s: %.0f MiB/s%n", n >> 30, (now - start) / 1e9,
                                    1024.0 / ((now - mark) / 1e9));
                            mark = now;
                            next += 1L << 30;
                        }
                    }
                } catch (Exception e) {
                    e.printStackTrace();
                }
            });
            try (SocketChannel c = SocketChannel.open(UnixDomainSocketAddress.of(sock))) {
                TlsChannel t = TlsChannel.handshake(c, cli.clientEngine("localhost", 0));
                ByteBuffer b = ByteBuffer.allocateDirect(2 << 20);
                for (long sent = 0; sent < total; sent += b.capacity()) {
                    b.clear();
                    t.write(b);
                }
                t.close();
            }
            reader.join();
        } finally {
            Files.deleteIfExists(sock);
        }
    }
}
