package jblockd.client;

import java.io.IOException;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.Semaphore;
import java.util.function.LongConsumer;

import com.fasterxml.jackson.databind.JsonNode;

import jblockd.nbd.client.NbdClient;

/**
 * Pull-mode backup, the way libvirt, virtnbdbackup and oVirt do it, against any daemon that
 * speaks QEMU 7.2's QMP (jblockd or qemu-storage-daemon): a scratch qcow2 over the device's node
 * and a {@code sync=none} backup into it freeze a point-in-time view (classic fleecing), the
 * view is exported read-only over NBD together with a copy of the checkpoint bitmap, and only
 * the extents the bitmap calls dirty are read and handed to a {@link Sink} (a full pull reads
 * every allocated extent). Zeroes are handed over as zeroes, not read, so an incremental on top
 * of an older backup masks what changed to zero. Teardown undoes everything on every path; the
 * checkpoint bitmap itself is never changed (the pull works from a disabled copy), and
 * {@code newCheckpoint}, when given, is added in the same transaction as the fleecing point.
 */
public final class PullBackup {
    /** Where the pulled data goes: a local image, usually a qcow2 over the previous backup. */
    public interface Sink {
        void write(long offset, ByteBuffer data) throws IOException;

        void zero(long offset, long length) throws IOException;
    }

    /**
     * @param device        the device or node to back up
     * @param bitmap        the checkpoint to pull changes since; null for a full pull
     * @param newCheckpoint a persistent bitmap added at the fleecing point (the next pull's
     *                      {@code bitmap}); null for none
     * @param scratch       the scratch qcow2 the daemon creates (a path on the daemon's host)
     * @param nbdSocket     the daemon's NBD server socket; null: start one on a socket next to
     *                      {@code scratch} for this pull and stop it after
     * @param tag           names of what the pull adds to the daemon ({@code TAG-scratch}, ...)
     */
    public record Options(String device, String bitmap, String newCheckpoint, Path scratch, Path nbdSocket,
                          String tag) {
    }

    /** What was pulled: the disk's size, the bytes the bitmap named, of them read and zeroes. */
    public record Result(long size, long dirtyBytes, long dataBytes, long zeroBytes) {
    }

    private static final Duration T = Duration.ofSeconds(60);
    private static final long STATUS_WINDOW = 64L << 20;
    private static final int READ_CHUNK = 4 << 20;
    private static final int IN_FLIGHT = 8;
    private static final String DIRTY = "qemu:dirty-bitmap:";
    private static final String ALLOCATION = "base:allocation";

    private final QmpClient qmp;
    private final Options o;
    private final List<ThrowingRunnable> teardown = new ArrayList<>();

    private interface ThrowingRunnable {
        void run() throws Exception;
    }

    private PullBackup(QmpClient qmp, Options o) {
        this.qmp = qmp;
        this.o = o;
    }

    /** Runs the whole pull; {@code progress} gets bytes handed to the sink as they go. */
    public static Result run(QmpClient qmp, Options o, Sink sink, LongConsumer progress)
            throws IOException, InterruptedException {
        PullBackup p = new PullBackup(qmp, o);
        Result r;
        try {
            r = p.pull(sink, progress);
        } catch (IOException | InterruptedException | RuntimeException e) {
            try {
                p.tearDown();
            } catch (IOException t) {
                e.addSuppressed(t);
            }
            throw e;
        }
        p.tearDown();
        return r;
    }

    private String name(String what) {
        return o.tag() + "-" + what;
    }

    private Result pull(Sink sink, LongConsumer progress) throws IOException, InterruptedException {
        NodeLookup.Found found = NodeLookup.resolve(qmp, o.device());
        String node = found.node();
        long size = found.size();
        // the scratch: a qcow2 of the disk's size, its backing the live node (given at add)
        ImageFiles.createQcow2(qmp, o.scratch(), size, null, name("create"));
        String scratchNode = name("scratch");
        qmp.execute("blockdev-add", Map.of("driver", "qcow2", "node-name", scratchNode, "backing", node,
                "file", Map.of("driver", "file", "filename", o.scratch().toString())));
        teardown.add(() -> qmp.execute("blockdev-del", Map.of("node-name", scratchNode)));
        // the fleecing point: the bitmap copy, the new checkpoint and the sync=none job at once
        List<Object> actions = new ArrayList<>();
        String copy = o.bitmap() == null ? null : name("bitmap");
        if (copy != null) {
            actions.add(action("block-dirty-bitmap-add", Map.of("node", node, "name", copy, "disabled", true)));
            actions.add(action("block-dirty-bitmap-merge", Map.of("node", node, "target", copy,
                    "bitmaps", List.of(o.bitmap()))));
        }
        if (o.newCheckpoint() != null) {
            actions.add(action("block-dirty-bitmap-add", Map.of("node", node, "name", o.newCheckpoint(),
                    "persistent", true)));
        }
        String job = name("fleecing");
        actions.add(action("blockdev-backup", Map.of("job-id", job, "device", node, "target", scratchNode,
                "sync", "none")));
        final String liveNode = node;
        qmp.execute("transaction", Map.of("actions", actions));
        if (copy != null) {
            teardown.add(() -> qmp.execute("block-dirty-bitmap-remove", Map.of("node", liveNode, "name", copy)));
        }
        teardown.add(() -> endJob(job));
        // the export of the frozen view, with the bitmap copy
        Path socket = o.nbdSocket();
        if (socket == null) {
            socket = o.scratch().resolveSibling(o.scratch().getFileName() + ".nbd");
            Files.deleteIfExists(socket);
            qmp.execute("nbd-server-start", Map.of("addr", Map.of("type", "unix", "data",
                    Map.of("path", socket.toString()))));
            Path started = socket;
            teardown.add(() -> {
                qmp.execute("nbd-server-stop", null);
                Files.deleteIfExists(started);
            });
        }
        String export = name("export");
        Map<String, Object> exp = new LinkedHashMap<>(Map.of("type", "nbd", "id", export, "node-name", scratchNode,
                "name", export));
        if (copy != null) {
            exp.put("bitmaps", List.of(copy));
        }
        qmp.execute("block-export-add", exp);
        teardown.add(() -> {
            try (EventStream ev = qmp.events()) {
                qmp.execute("block-export-del", Map.of("id", export));
                ev.await(e -> e.name().equals("BLOCK_EXPORT_DELETED") && e.data().path("id").asText().equals(export),
                        T);
            }
        });
        List<String> contexts = copy == null ? List.of(ALLOCATION) : List.of(ALLOCATION, DIRTY + copy);
        try (NbdClient nbd = NbdClient.connect(UnixDomainSocketAddress.of(socket),
                new NbdClient.Options(export, contexts))) {
            return copyExtents(nbd, copy, sink, progress);
        }
    }

    /**
     * Walks the export in windows: the bitmap's dirty runs (or everything, for a full pull),
     * split by base:allocation into zeroes (handed over as such) and data (read, several
     * requests in flight, in order of offset per window).
     */
    private Result copyExtents(NbdClient nbd, String copy, Sink sink, LongConsumer progress)
            throws IOException, InterruptedException {
        Integer alloc = nbd.metaContexts().get(ALLOCATION);
        Integer dirty = copy == null ? null : nbd.metaContexts().get(DIRTY + copy);
        if (alloc == null || (copy != null && dirty == null)) {
            throw new IOException("the NBD server did not select the contexts " + nbd.metaContexts().keySet());
        }
        long size = nbd.size();
        long dirtyBytes = 0;
        long dataBytes = 0;
        long zeroBytes = 0;
        int chunk = Math.min(READ_CHUNK, nbd.maxRequest());
        Semaphore slots = new Semaphore(IN_FLIGHT);
        try (ExecutorService pool = Executors.newVirtualThreadPerTaskExecutor()) {
            List<Future<?>> reads = new ArrayList<>();
            long pos = 0;
            while (pos < size) {
                long len = Math.min(STATUS_WINDOW, size - pos);
                List<long[]> wanted = new ArrayList<>(); // {offset, length}
                long covered;
                if (dirty != null) {
                    covered = 0;
                    for (NbdClient.Extent e : nbd.blockStatus(pos, len, false).get(dirty)) {
                        if ((e.flags() & 1) != 0) {
                            wanted.add(new long[] {pos + covered, e.length()});
                        }
                        covered += e.length();
                    }
                } else {
                    wanted.add(new long[] {pos, len});
                    covered = len;
                }
                if (covered <= 0) {
                    throw new IOException("the NBD server described nothing at " + pos);
                }
                for (long[] w : wanted) {
                    dirtyBytes += w[1];
                    long at = w[0];
                    long end = w[0] + w[1];
                    while (at < end) {
                        List<NbdClient.Extent> st = nbd.blockStatus(at, end - at, false).get(alloc);
                        for (NbdClient.Extent e : st) {
                            long n = Math.min(e.length(), end - at);
                            if ((e.flags() & 2) != 0) { // ZERO: no read needed
                                sink.zero(at, n);
                                zeroBytes += n;
                                progress.accept(n);
                            } else {
                                for (long off = at; off < at + n; off += chunk) {
                                    long from = off;
                                    int m = (int) Math.min(chunk, at + n - off);
                                    slots.acquire();
                                    reads.add(pool.submit(() -> {
                                        try {
                                            ByteBuffer buf = ByteBuffer.allocate(m);
                                            nbd.read(from, buf);
                                            sink.write(from, buf.flip());
                                            progress.accept(m);
                                            return null;
                                        } finally {
                                            slots.release();
                                        }
                                    }));
                                }
                                dataBytes += n;
                            }
                            at += n;
                            if (at >= end) {
                                break;
                            }
                        }
                    }
                }
                pos += covered;
                for (Future<?> f : reads) {
                    try {
                        f.get();
                    } catch (java.util.concurrent.ExecutionException e) {
                        Throwable c = e.getCause();
                        throw c instanceof IOException io ? io : new IOException(c);
                    }
                }
                reads.clear();
            }
        }
        return new Result(size, dirtyBytes, dataBytes, zeroBytes);
    }

    /** The sync=none job ends by cancel (its normal end, reference incremental.md §5.3). */
    private void endJob(String job) throws InterruptedException {
        try (EventStream ev = qmp.events()) {
            qmp.execute("block-job-cancel", Map.of("device", job, "force", true));
            ev.await(e -> e.name().equals(QmpEvent.JOB_STATUS_CHANGE) && e.data().path("id").asText().equals(job)
                    && e.data().path("status").asText().equals("null"), T);
        }
    }

    /** Undoes every step that was done, newest first; the first failure is thrown after all ran. */
    private void tearDown() throws IOException {
        Exception first = null;
        for (int i = teardown.size() - 1; i >= 0; i--) {
            try {
                teardown.get(i).run();
            } catch (Exception e) {
                if (first == null) {
                    first = e;
                }
            }
        }
        teardown.clear();
        if (first != null) {
            throw new IOException("tearing the pull down: " + first.getMessage(), first);
        }
    }

    private static Map<String, Object> action(String type, Map<String, ?> data) {
        return Map.of("type", type, "data", data);
    }
}
