package jblockd.daemon;

import java.io.IOException;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Stream;

import jblockd.block.DriverRegistry;
import jblockd.block.ImageCreator;
import jblockd.client.EventStream;
import jblockd.client.QmpClient;
import jblockd.client.QmpEvent;
import jblockd.nbd.client.NbdClient;

/**
 * The workload {@code bin/_run.sh} records the JVM's ahead-of-time cache with (JDK 25
 * {@code -XX:AOTCacheOutput}, JEP 483/514/515): an in-process daemon with a qcow2 node exported
 * over NBD, guest writes, reads and block status through it while a dirty bitmap records, a
 * full and an incremental backup and a mirror. The cache holds the classes loaded and linked
 * and the method profiles of this run, so a freshly started daemon does its first job at close
 * to its steady speed instead of spending its first seconds in the interpreter and the JIT
 * (measured: the first 5 s of 4 KiB random writes over NBD went from 0.35x to 0.8x of a warm
 * daemon's rate). It only exercises public commands; nothing it does outlives it.
 */
public final class AotTraining {
    private static final Duration T = Duration.ofSeconds(120);
    private static final long SIZE = 64L << 20;
    private static final int REQUESTS_PER_THREAD = 1500;

    private AotTraining() {
    }

    /** What a run did: guest requests answered, and each job's end ("id ok" or "id error: ..."). */
    record Summary(long guestRequests, List<String> jobEnds) {
    }

    public static void main(String[] args) throws Exception {
        System.out.println(train());
    }

    /** Runs the workload in a temporary directory it removes after. */
    static Summary train() throws Exception {
        Path tmp = Files.createTempDirectory("jblockd-aot-");
        try {
            return run(tmp);
        } finally {
            try (Stream<Path> files = Files.walk(tmp)) {
                for (Path p : files.sorted(Comparator.reverseOrder()).toList()) {
                    Files.deleteIfExists(p);
                }
            }
        }
    }

    private static Summary run(Path tmp) throws Exception {
        ImageCreator qcow2 = DriverRegistry.standard().creator("qcow2").orElseThrow();
        for (String f : new String[] {"disk", "full", "inc", "mirror"}) {
            qcow2.create(ImageCreator.Options.of(tmp.resolve(f + ".qcow2"), SIZE));
        }
        Path sock = tmp.resolve("qmp.sock");
        Path nbdSock = tmp.resolve("nbd.sock");
        Daemon daemon = Daemon.builder().qmp("unix:" + sock).build();
        AtomicLong requests = new AtomicLong();
        List<String> ends = new ArrayList<>();
        daemon.start();
        try (QmpClient qmp = QmpClient.connectUnix(sock)) {
            add(qmp, "fmt", tmp.resolve("disk.qcow2"));
            qmp.execute("nbd-server-start", Map.of("addr", Map.of("type", "unix", "data",
                    Map.of("path", nbdSock.toString()))));
            qmp.execute("block-export-add", Map.of("type", "nbd", "id", "guest", "node-name", "fmt", "name", "vda",
                    "writable", true));
            qmp.execute("block-dirty-bitmap-add", Map.of("node", "fmt", "name", "chk"));
            try (NbdClient nbd = NbdClient.connect(UnixDomainSocketAddress.of(nbdSock),
                    NbdClient.Options.of("vda", "base:allocation"))) {
                requests.addAndGet(guest(nbd, 1));
                add(qmp, "full", tmp.resolve("full.qcow2"));
                ends.add(backup(qmp, "b-full", Map.of("sync", "full", "target", "full"), () -> requests.addAndGet(guest(nbd, 2))));
                requests.addAndGet(guest(nbd, 3));
                add(qmp, "inc", tmp.resolve("inc.qcow2"));
                ends.add(backup(qmp, "b-inc", Map.of("sync", "incremental", "bitmap", "chk", "target", "inc"),
                        () -> requests.addAndGet(guest(nbd, 4))));
                add(qmp, "mirror", tmp.resolve("mirror.qcow2"));
                try (EventStream ev = qmp.events()) {
                    qmp.execute("blockdev-mirror", Map.of("job-id", "m", "device", "fmt", "target", "mirror",
                            "sync", "full"));
                    requests.addAndGet(guest(nbd, 5));
                    ev.await(e -> e.name().equals(QmpEvent.BLOCK_JOB_READY), T);
                    qmp.execute("block-job-cancel", Map.of("device", "m"));
                    ends.add(end("m", ev.await(e -> e.name().equals(QmpEvent.BLOCK_JOB_COMPLETED), T)));
                }
            }
            qmp.execute("query-named-block-nodes", null);
            qmp.execute("query-block", null);
        } finally {
            daemon.close();
        }
        return new Summary(requests.get(), List.copyOf(ends));
    }

    private static String end(String id, QmpEvent completed) {
        return completed.data().has("error") ? id + " error: " + completed.data().get("error").asText() : id + " ok";
    }

    private static void add(QmpClient qmp, String node, Path file) {
        qmp.execute("blockdev-add", Map.of("driver", "qcow2", "node-name", node,
                "file", Map.of("driver", "file", "filename", file.toString())));
    }

    private interface Io {
        long run() throws IOException;
    }

    private static String backup(QmpClient qmp, String id, Map<String, Object> args, Io meanwhile) throws Exception {
        try (EventStream ev = qmp.events()) {
            Map<String, Object> a = new java.util.LinkedHashMap<>(args);
            a.put("job-id", id);
            a.put("device", "fmt");
            qmp.execute("blockdev-backup", a);
            meanwhile.run();
            return end(id, ev.await(e -> e.name().equals(QmpEvent.BLOCK_JOB_COMPLETED), T));
        }
    }

    /** A few thousand requests of the sizes guests and backup tools send, from several threads; returns how many. */
    private static long guest(NbdClient nbd, long seed) throws IOException {
        SplittableRandom rnd = new SplittableRandom(seed);
        Thread[] threads = new Thread[4];
        IOException[] failed = new IOException[1];
        for (int t = 0; t < threads.length; t++) {
            SplittableRandom r = rnd.split();
            threads[t] = Thread.ofVirtual().start(() -> {
                ByteBuffer small = ByteBuffer.allocate(4096);
                ByteBuffer large = ByteBuffer.allocate(65536);
                try {
                    for (int i = 0; i < REQUESTS_PER_THREAD; i++) {
                        long at4k = r.nextLong(SIZE / 4096) * 4096;
                        switch (i % 6) {
                            case 0, 1, 2 -> nbd.write(at4k, small.clear(), false);
                            case 3 -> nbd.read(at4k, small.clear());
                            case 4 -> nbd.write(r.nextLong(SIZE / 65536) * 65536, large.clear(), false);
                            default -> nbd.blockStatus(at4k, Math.min(1 << 20, SIZE - at4k), false);
                        }
                    }
                    nbd.flush();
                } catch (IOException e) {
                    synchronized (failed) {
                        failed[0] = e;
                    }
                }
            });
        }
        for (Thread t : threads) {
            try {
                t.join();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IOException("interrupted", e);
            }
        }
        if (failed[0] != null) {
            throw failed[0];
        }
        return threads.length * (REQUESTS_PER_THREAD + 1L); // and one flush each
    }
}
