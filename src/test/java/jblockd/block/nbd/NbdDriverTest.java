package jblockd.block.nbd;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.Allocation;
import jblockd.block.BlockDriverContract;
import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.Errno;
import jblockd.block.IoError;
import jblockd.block.file.FileDriver;
import jblockd.device.Device;
import jblockd.device.GuestIo;
import jblockd.device.RunState;
import jblockd.nbd.server.NbdExport;
import jblockd.nbd.server.NbdServer;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.QapiEvents;

/**
 * The nbd driver against jblockd's own NBD server on a real UNIX socket: the driver contract,
 * then the connection rules with a hand-stepped {@link NbdTimer} (open-timeout retries,
 * reconnect-delay 0 and 5 with the server back or not).
 */
class NbdDriverTest {
    private static final long SECOND = TimeUnit.SECONDS.toNanos(1);
    private static final long SIZE = 4L << 20;

    @TempDir
    Path dir;

    private final List<AutoCloseable> cleanup = new ArrayList<>();

    @AfterEach
    void closeAll() throws Exception {
        for (int i = cleanup.size() - 1; i >= 0; i--) {
            cleanup.get(i).close();
        }
    }

    /** A raw file served as export "e" on {@code sock} by a fresh in-process NbdServer. */
    private static NbdServer serve(Path sock, Path image) throws IOException {
        NbdServer server = new NbdServer();
        server.start(UnixDomainSocketAddress.of(sock), 0);
        BlockNode node = new BlockNode("file0", false, FileDriver.open(image, false), false, true);
        Device d = new Device("drive0", node, BlockdevOnError.REPORT, BlockdevOnError.ENOSPC);
        server.addExport(new NbdExport("e", "e", null, true,
                new GuestIo(d, new RunState(QapiEvents.NONE, () -> { }), QapiEvents.NONE)));
        return server;
    }

    private static Path image(Path dir, long size) throws IOException {
        Path img = dir.resolve("img.raw");
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
            f.setLength(size);
        }
        return img;
    }

    private static BlockdevOptions.Nbd options(Path sock, long reconnectDelay, long openTimeout) {
        return new BlockdevOptions.Nbd(BlockdevOptions.Common.defaults(), new BlockdevOptions.NbdServer.Unix(
                sock.toString()), "e", null, null, reconnectDelay, openTimeout, null);
    }

    @Nested
    class Contract extends BlockDriverContract {
        private final List<NbdServer> servers = new ArrayList<>();

        @Override
        protected BlockNode open(Path d, long size) throws IOException {
            Path sock = d.resolve("nbd" + servers.size() + ".sock");
            servers.add(serve(sock, image(d, size)));
            BlockNode n = new BlockNode("nbd0", false, NbdDriver.open(options(sock, 0, 0), NbdTimer.SYSTEM), false,
                    true);
            assertThat(n.driver().formatName()).isEqualTo("nbd");
            assertThat(n.driver().filename()).isEqualTo("nbd+unix:///e?socket=" + sock);
            return n;
        }

        @AfterEach
        void stopServers() {
            servers.forEach(NbdServer::stop);
        }
    }

    @Test
    void blockStatusComesFromBaseAllocation() throws Exception {
        Path sock = dir.resolve("s.sock");
        Path img = image(dir, SIZE);
        NbdServer server = serve(sock, img);
        cleanup.add(server::stop);
        NbdDriver d = NbdDriver.open(options(sock, 0, 0), NbdTimer.SYSTEM);
        cleanup.add(d::close);
        d.write(1 << 20, ByteBuffer.wrap(filled(65536, 7)), false);
        assertThat(d.status(0, SIZE).allocation()).isEqualTo(Allocation.ZERO);
        assertThat(d.status(0, SIZE).end()).isEqualTo(1 << 20);
        assertThat(d.status(1 << 20, SIZE - (1 << 20)).allocation()).isEqualTo(Allocation.DATA);
    }

    /** jblockd's server offers MULTI_CONN: the node adds connections and every one sees every write. */
    @Test
    void multiConnSpreadsRequestsOverCoherentConnections() throws Exception {
        Path sock = dir.resolve("s.sock");
        NbdServer server = serve(sock, image(dir, SIZE));
        cleanup.add(server::stop);
        NbdDriver d = NbdDriver.open(options(sock, 0, 0), NbdTimer.SYSTEM);
        cleanup.add(d::close);
        d.awaitExtraConnections(); // they join in the background
        assertThat(d.connections()).isEqualTo(1 + NbdDriver.EXTRA_CONNECTIONS);
        for (int i = 0; i < 16; i++) {
            d.write(i * 4096L, ByteBuffer.wrap(filled(4096, i + 1)), false);
        }
        d.flush();
        for (int round = 0; round < 2; round++) {
            for (int i = 0; i < 16; i++) { // each read on another connection than its write
                ByteBuffer b = ByteBuffer.allocate(4096);
                d.read(i * 4096L, b);
                assertThat(b.array()).as("block %d", i).isEqualTo(filled(4096, i + 1));
            }
        }
    }

    @Test
    void openErrorsNameTheFailingStep() throws Exception {
        Path sock = dir.resolve("s.sock");
        assertThatThrownBy(() -> NbdDriver.open(options(sock, 0, 0), NbdTimer.SYSTEM))
                .hasMessage("Failed to connect to '" + sock + "': No such file or directory");
        NbdServer server = serve(sock, image(dir, SIZE));
        cleanup.add(server::stop);
        BlockdevOptions.Nbd noExport = new BlockdevOptions.Nbd(BlockdevOptions.Common.defaults(),
                new BlockdevOptions.NbdServer.Unix(sock.toString()), "nope", null, null, 0, 0, null);
        assertThatThrownBy(() -> NbdDriver.open(noExport, NbdTimer.SYSTEM)).hasMessage("Requested export not available");
        BlockdevOptions.Nbd tls = new BlockdevOptions.Nbd(BlockdevOptions.Common.defaults(),
                new BlockdevOptions.NbdServer.Unix(sock.toString()), "e", "tls0", null, 0, 0, null);
        assertThatThrownBy(() -> NbdDriver.open(tls, NbdTimer.SYSTEM)).hasMessage("No TLS credentials with id 'tls0'");
        BlockdevOptions.Nbd bitmap = new BlockdevOptions.Nbd(BlockdevOptions.Common.defaults(),
                new BlockdevOptions.NbdServer.Unix(sock.toString()), "e", null, null, 0, 0, "qemu:dirty-bitmap:b");
        assertThatThrownBy(() -> NbdDriver.open(bitmap, NbdTimer.SYSTEM))
                .hasMessage("Could not open image: Invalid argument");
        BlockdevOptions.Nbd refused = new BlockdevOptions.Nbd(BlockdevOptions.Common.defaults(),
                new BlockdevOptions.NbdServer.Inet("127.0.0.1", "1"), null, null, null, 0, 0, null);
        assertThatThrownBy(() -> NbdDriver.open(refused, NbdTimer.SYSTEM))
                .hasMessage("Failed to connect to '127.0.0.1:1': Connection refused");
    }

    @Test
    void openTimeoutRetriesUntilTheServerAppears() throws Exception {
        Path sock = dir.resolve("s.sock");
        Path img = image(dir, SIZE);
        ManualTimer timer = new ManualTimer();
        CompletableFuture<NbdDriver> opened = CompletableFuture.supplyAsync(() -> {
            try {
                return NbdDriver.open(options(sock, 0, 5), timer, 0);
            } catch (IOException e) {
                throw new RuntimeException(e);
            }
        }, r -> Thread.ofVirtual().start(r));
        timer.awaitPending(1); // the first attempt failed: it waits 1 s
        timer.advance(SECOND);
        timer.awaitPending(1); // the second failed too: 2 s now
        NbdServer server = serve(sock, img);
        cleanup.add(server::stop);
        timer.advance(2 * SECOND);
        NbdDriver d = opened.get(10, TimeUnit.SECONDS);
        cleanup.add(d::close);
        assertThat(d.length()).isEqualTo(SIZE);
    }

    @Test
    void openTimeoutEndsWithTheLastAttemptsError() throws Exception {
        Path sock = dir.resolve("s.sock");
        ManualTimer timer = new ManualTimer();
        CompletableFuture<Void> opened = CompletableFuture.runAsync(() -> {
            try {
                NbdDriver.open(options(sock, 0, 3), timer, 0).close();
            } catch (IOException e) {
                throw new RuntimeException(e);
            }
        }, r -> Thread.ofVirtual().start(r));
        timer.awaitPending(1);
        timer.advance(SECOND);
        timer.awaitPending(1);
        timer.advance(2 * SECOND); // 3 s: time is up
        assertThatThrownBy(() -> opened.get(10, TimeUnit.SECONDS)).cause().cause().isInstanceOf(IoError.class)
                .hasMessage("Failed to connect to '" + sock + "': No such file or directory");
        assertThat(timer.now()).isEqualTo(3 * SECOND);
    }

    /**
     * Beyond QEMU: once the server is back, a request does not wait for the background
     * reconnect's next attempt (up to 16 s away): it makes one itself (the timer never moves).
     */
    @Test
    void withoutReconnectDelayARequestReconnectsItselfOnceTheServerIsBack() throws Exception {
        Path sock = dir.resolve("s.sock");
        Path img = image(dir, SIZE);
        NbdServer server = serve(sock, img);
        ManualTimer timer = new ManualTimer();
        NbdDriver d = NbdDriver.open(options(sock, 0, 0), timer, 0);
        cleanup.add(d::close);
        d.write(0, ByteBuffer.wrap(filled(4096, 3)), false);
        server.stop();
        timer.awaitPending(1); // the drop was seen, the first background attempt failed
        assertThatThrownBy(() -> d.read(0, ByteBuffer.allocate(4096))) // its own attempt fails too
                .isInstanceOfSatisfying(IoError.class, e -> assertThat(e.errno()).isEqualTo(Errno.EIO));
        NbdServer again = serve(sock, img);
        cleanup.add(again::stop);
        ByteBuffer b = ByteBuffer.allocate(4096);
        d.read(0, b);
        assertThat(b.array()).isEqualTo(filled(4096, 3));
        assertThat(timer.now()).isZero();
    }

    @Test
    void withoutReconnectDelayRequestsFailAtOnceUntilTheBackgroundReconnect() throws Exception {
        Path sock = dir.resolve("s.sock");
        Path img = image(dir, SIZE);
        NbdServer server = serve(sock, img);
        ManualTimer timer = new ManualTimer();
        NbdDriver d = NbdDriver.open(options(sock, 0, 0), timer, 0);
        cleanup.add(d::close);
        d.write(0, ByteBuffer.wrap(filled(4096, 1)), false);
        server.stop();
        timer.awaitPending(1); // the drop was seen, the first reconnect failed
        assertThatThrownBy(() -> d.read(0, ByteBuffer.allocate(4096)))
                .isInstanceOfSatisfying(IoError.class, e -> assertThat(e.errno()).isEqualTo(Errno.EIO));
        NbdServer again = serve(sock, img);
        cleanup.add(again::stop);
        timer.advance(SECOND);
        d.link().awaitConnected();
        ByteBuffer b = ByteBuffer.allocate(4096);
        d.read(0, b);
        assertThat(b.array()).isEqualTo(filled(4096, 1));
    }

    @Test
    void withReconnectDelayARequestWaitsForTheServerToComeBack() throws Exception {
        Path sock = dir.resolve("s.sock");
        Path img = image(dir, SIZE);
        NbdServer server = serve(sock, img);
        ManualTimer timer = new ManualTimer();
        NbdDriver d = NbdDriver.open(options(sock, 5, 0), timer, 0);
        cleanup.add(d::close);
        server.stop();
        timer.awaitPending(2); // the reconnect-delay window and the next attempt
        CompletableFuture<Void> write = CompletableFuture.runAsync(() -> {
            try {
                d.write(8192, ByteBuffer.wrap(filled(4096, 9)), true);
            } catch (IOException e) {
                throw new RuntimeException(e);
            }
        }, r -> Thread.ofVirtual().start(r));
        NbdServer again = serve(sock, img);
        cleanup.add(again::stop);
        timer.advance(SECOND); // 1 s < 5 s: the retry connects within the window
        write.get(10, TimeUnit.SECONDS);
        ByteBuffer b = ByteBuffer.allocate(4096);
        d.read(8192, b);
        assertThat(b.array()).isEqualTo(filled(4096, 9));
    }

    @Test
    void withReconnectDelayRequestsFailWithEioWhenTheWindowCloses() throws Exception {
        Path sock = dir.resolve("s.sock");
        NbdServer server = serve(sock, image(dir, SIZE));
        ManualTimer timer = new ManualTimer();
        NbdDriver d = NbdDriver.open(options(sock, 5, 0), timer, 0);
        cleanup.add(d::close);
        server.stop();
        timer.awaitPending(2);
        CompletableFuture<Void> read = CompletableFuture.runAsync(() -> {
            try {
                d.read(0, ByteBuffer.allocate(4096));
            } catch (IOException e) {
                throw new RuntimeException(e);
            }
        }, r -> Thread.ofVirtual().start(r));
        for (int s = 0; s < 5; s++) {
            timer.advance(SECOND);
        }
        assertThatThrownBy(() -> read.get(10, TimeUnit.SECONDS)).cause().cause()
                .isInstanceOfSatisfying(IoError.class, e -> assertThat(e.errno()).isEqualTo(Errno.EIO));
        assertThatThrownBy(() -> d.read(0, ByteBuffer.allocate(4096))).isInstanceOf(IoError.class);
    }

    @Test
    void closingTheNodeEndsWaitingRequestsAndTheReconnect() throws Exception {
        Path sock = dir.resolve("s.sock");
        NbdServer server = serve(sock, image(dir, SIZE));
        ManualTimer timer = new ManualTimer();
        NbdDriver d = NbdDriver.open(options(sock, 5, 0), timer, 0);
        server.stop();
        timer.awaitPending(2); // the window and the next reconnect attempt
        CompletableFuture<Void> read = CompletableFuture.runAsync(() -> {
            try {
                d.read(0, ByteBuffer.allocate(4096));
            } catch (IOException e) {
                throw new RuntimeException(e);
            }
        }, r -> Thread.ofVirtual().start(r));
        d.close(); // blockdev-del while reconnecting
        assertThatThrownBy(() -> read.get(10, TimeUnit.SECONDS)).cause().cause()
                .isInstanceOfSatisfying(IoError.class, e -> assertThat(e.errno()).isEqualTo(Errno.EIO));
        timer.awaitPending(0);
        d.link().awaitConnected(); // returns: the link is closed
    }

    private static byte[] filled(int n, int v) {
        byte[] b = new byte[n];
        Arrays.fill(b, (byte) v);
        return b;
    }

    /** Time that moves only when the test says so; tasks run on the test's thread as they fall due. */
    static final class ManualTimer implements NbdTimer {
        private long now;
        private final List<long[]> due = new ArrayList<>();
        private final List<Runnable> tasks = new ArrayList<>();

        @Override
        public synchronized long nanoTime() {
            return now;
        }

        synchronized long now() {
            return now;
        }

        @Override
        public synchronized Scheduled schedule(long delayNanos, Runnable task) {
            long[] at = {now + delayNanos};
            due.add(at);
            tasks.add(task);
            notifyAll();
            return () -> {
                synchronized (ManualTimer.this) {
                    int i = due.indexOf(at);
                    if (i >= 0) {
                        due.remove(i);
                        tasks.remove(i);
                        ManualTimer.this.notifyAll();
                    }
                }
            };
        }

        /** Waits (bounded) until at least {@code n} tasks are scheduled. */
        synchronized void awaitPending(int n) throws InterruptedException {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (due.size() < n) {
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    throw new AssertionError("expected " + n + " scheduled tasks, have " + due.size());
                }
                TimeUnit.NANOSECONDS.timedWait(this, left);
            }
        }

        void advance(long nanos) {
            List<Runnable> run = new ArrayList<>();
            synchronized (this) {
                now += nanos;
                for (int i = 0; i < due.size(); ) {
                    if (due.get(i)[0] <= now) {
                        due.remove(i);
                        run.add(tasks.remove(i));
                    } else {
                        i++;
                    }
                }
            }
            run.forEach(Runnable::run);
        }
    }
}
