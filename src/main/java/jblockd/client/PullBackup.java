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
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.Semaphore;
import java.util.function.LongConsumer;

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
     * Walks the export in windows. One BLOCK_STATUS per window answers both contexts: the
     * bitmap's dirty runs (everything, for a full pull) and base:allocation, which splits them
     * into zeroes (handed over as such) and data (read, several requests in flight, each window
     * finished before the next). Only where the allocation answer stops short of a dirty run is
     * it asked again for the rest.
     */
    private Result copyExtents(NbdClient nbd, String copy, Sink sink, LongConsumer progress)
            throws IOException, InterruptedException {
        Integer alloc = nbd.metaContexts().get(ALLOCATION);
        Integer dirty = copy == null ? null : nbd.metaContexts().get(DIRTY + copy);
        if (alloc == null || (copy != null && dirty == null)) {
            throw new IOException("the NBD server did not select the contexts " + nbd.metaContexts().keySet());
        }
        Reader reader = new Reader(nbd, sink, progress, Math.min(READ_CHUNK, nbd.maxRequest()));
        long size = nbd.size();
        long dirtyBytes = 0;
        long zeroBytes = 0;
        try (reader) {
            long pos = 0;
            while (pos < size) {
                Map<Integer, List<NbdClient.Extent>> status = nbd.blockStatus(pos, Math.min(STATUS_WINDOW, size - pos),
                        false);
                Extents allocation = new Extents(pos, status.get(alloc));
                Extents wanted = dirty == null ? allocation : new Extents(pos, status.get(dirty));
                if (wanted.end() <= pos) {
                    throw new IOException("the NBD server described nothing at " + pos);
                }
                for (Range run : wanted.runs(dirty == null ? 0 : 1)) {
                    dirtyBytes += run.length();
                    long at = run.start();
                    long end = at + run.length();
                    while (at < end) {
                        if (at >= allocation.end()) {
                            allocation = new Extents(at, nbd.blockStatus(at, end - at, false).get(alloc));
                            if (allocation.end() <= at) {
                                throw new IOException("the NBD server described no allocation at " + at);
                            }
                        }
                        for (Range e : allocation.within(at, end)) {
                            if ((e.flags() & 2) != 0) { // ZERO: no read needed
                                sink.zero(e.start(), e.length());
                                zeroBytes += e.length();
                                progress.accept(e.length());
                            } else {
                                reader.read(e.start(), e.length());
                            }
                            at = e.start() + e.length();
                        }
                    }
                }
                reader.awaitAll();
                pos = wanted.end();
            }
        }
        return new Result(size, dirtyBytes, dirtyBytes - zeroBytes, zeroBytes);
    }

    /** An absolute range of the export with a context's flags. */
    private record Range(long start, long length, int flags) {
    }

    /** A BLOCK_STATUS answer for one context, placed at the offset it was asked for. */
    private record Extents(long start, List<NbdClient.Extent> extents) {
        long end() {
            long e = start;
            for (NbdClient.Extent x : extents) {
                e += x.length();
            }
            return e;
        }

        /** The extents whose flags have all of {@code flags} (0: all), merged where adjacent, as absolute ranges. */
        List<Range> runs(int flags) {
            List<Range> out = new ArrayList<>();
            long at = start;
            for (NbdClient.Extent x : extents) {
                if ((x.flags() & flags) == flags) {
                    Range last = out.isEmpty() ? null : out.getLast();
                    if (last != null && last.start() + last.length() == at) {
                        out.set(out.size() - 1, new Range(last.start(), last.length() + x.length(), flags));
                    } else {
                        out.add(new Range(at, x.length(), flags));
                    }
                }
                at += x.length();
            }
            return out;
        }

        /** The parts of {@code [from, to)} this answer covers, in order, as absolute ranges with their flags. */
        List<Range> within(long from, long to) {
            List<Range> out = new ArrayList<>();
            long at = start;
            for (NbdClient.Extent x : extents) {
                long a = Math.max(at, from);
                long b = Math.min(at + x.length(), to);
                if (a < b) {
                    out.add(new Range(a, b - a, x.flags()));
                }
                at += x.length();
            }
            return out;
        }
    }

    /**
     * Data reads, {@link #IN_FLIGHT} at once in chunks of at most {@code chunk}, into buffers
     * reused from a pool (at most one per read in flight); the first failure is thrown by
     * {@link #awaitAll}.
     */
    private static final class Reader implements AutoCloseable {
        private final NbdClient nbd;
        private final Sink sink;
        private final LongConsumer progress;
        private final int chunk;
        private final Semaphore slots = new Semaphore(IN_FLIGHT);
        private final ConcurrentLinkedQueue<ByteBuffer> buffers =
                new ConcurrentLinkedQueue<>();
        private final ExecutorService pool = Executors.newVirtualThreadPerTaskExecutor();
        private final List<Future<?>> reads = new ArrayList<>();

        Reader(NbdClient nbd, Sink sink, LongConsumer progress, int chunk) {
            this.nbd = nbd;
            this.sink = sink;
            this.progress = progress;
            this.chunk = chunk;
        }

        void read(long offset, long length) throws InterruptedException {
            for (long off = offset; off < offset + length; off += chunk) {
                long from = off;
                int n = (int) Math.min(chunk, offset + length - off);
                slots.acquire();
                reads.add(pool.submit(() -> {
                    ByteBuffer buf = buffers.poll();
                    if (buf == null) {
                        buf = ByteBuffer.allocate(chunk);
                    }
                    try {
                        buf.clear().limit(n);
                        nbd.read(from, buf);
                        sink.write(from, buf.flip());
                        progress.accept(n);
                        return null;
                    } finally {
                        buffers.add(buf);
                        slots.release();
                    }
                }));
            }
        }

        void awaitAll() throws IOException, InterruptedException {
            try {
                for (Future<?> f : reads) {
                    f.get();
                }
            } catch (ExecutionException e) {
                Throwable c = e.getCause();
                throw c instanceof IOException io ? io : new IOException(c);
            } finally {
                reads.clear();
            }
        }

        @Override
        public void close() {
            pool.close(); // waits for reads still running after a failure
        }
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
