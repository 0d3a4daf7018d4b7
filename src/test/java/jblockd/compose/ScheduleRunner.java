package jblockd.compose;

import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.Predicate;

import com.fasterxml.jackson.databind.JsonNode;

import jblockd.compose.CompositionFailure.Check;
import jblockd.compose.Schedule.Numbered;
import jblockd.compose.Schedule.Setup;
import jblockd.compose.ScheduleState.Outcome;
import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.QmpTestClient;

/**
 * Runs one schedule against a real daemon and holds it to the model. The expectations:
 * <ul>
 * <li>after every step, every guest read (the step's own and a whole-disk read by one guest in
 *     turn) equals the model, and BLOCK_STATUS calls nothing "zero" that holds data;</li>
 * <li>guest requests sent while the run state is stopped stay unanswered until {@code cont};</li>
 * <li>a completed backup's target equals the disk when its command returned (sync=full/top), a
 *     sync=none target over its source equals it when the job is cancelled (fleecing);</li>
 * <li>a mirror or active commit ended after READY leaves a target equal to the disk, a completed
 *     one leaves the device on it; stream and commit change the chain as QEMU does, and the files
 *     of the chain always compose to the model (also after the daemon quits, with qemu-img check
 *     clean).</li>
 * </ul>
 * A job may end on its own before the step that was to end it: the runner notices its end event
 * before each step and moves the {@link ScheduleState} by what really happened; a step the new
 * state does not allow is skipped (and logged as such).
 */
final class ScheduleRunner {
    private static final Duration JOB_END = Duration.ofSeconds(90);
    private static final Duration IO = Duration.ofSeconds(60);
    private static final int MIB = 1 << 20;
    private static final int ENOTSUP = 95;

    /** What a run did, for the long mode's figures; {@code jobEnds} counts "SHAPE OUTCOME". */
    record Figures(int steps, int skipped, int guestOps, int jobs, Map<String, Integer> jobEnds) {
    }

    /**
     * What the runner keeps of the running job beyond {@link ScheduleState.Job}: its target file,
     * the disk at its start, and whether block-job-complete was sent (a READY job's COMPLETED
     * event then means a pivot, else a cancel without one).
     */
    private record Running(Path target, byte[] pointInTime, boolean completeIssued) {
    }

    /** The checkpoint chain's bitmap (on the device's node). */
    private static final String CHECKPOINT = "chk";

    /** A running chain link: its target node, the node holding {@link #CHECKPOINT}, full or incremental. */
    private record ChainLink(String node, String bitmapNode, boolean full) {
    }

    private final Schedule schedule;
    private final Setup setup;
    private final Path dir;
    private final List<String> log;
    private final ScheduleState state;
    private final List<JsonNode> events = new ArrayList<>();
    private DiskModel model;
    private QmpTestClient qmp;
    private final List<NbdGuest> guests = new ArrayList<>();
    private Running running;
    private ChainLink chainLink;
    /** The last completed link of the checkpoint chain, or null when there is no usable checkpoint. */
    private Path chainTip;
    private String checkpointNode;
    private int guestOps;
    private int jobs;
    private int skipped;
    private final Map<String, Integer> jobEnds = new java.util.TreeMap<>();

    /** {@code log} receives one line per step as it runs (the replay, with what happened). */
    ScheduleRunner(Schedule schedule, Path dir, List<String> log) {
        this.schedule = schedule;
        this.setup = schedule.setup();
        this.dir = dir;
        this.log = log;
        this.state = new ScheduleState(setup.format(), setup.layers());
    }

    Figures run() throws Exception {
        Images.create(setup, dir);
        model = new DiskModel(Images.composed(setup));
        expectChainEqualsModel("setup (qemu-img's view of the images just written)");
        Path nbd = dir.resolve("nbd.sock");
        String exportOf = setup.exportByNodeName() ? "node-name=root0" : "device=drive0";
        try (DaemonProcess daemon = DaemonProcess.start(dir,
                "--drive", "id=drive0,file=" + top() + ",format=" + setup.format() + ",node-name=root0,cache=" + setup.cache(),
                "--nbd-server", "addr.type=unix,addr.path=" + nbd,
                "--export", "type=nbd,id=exp0," + exportOf + ",name=disk,writable=on")) {
            try {
                qmp = daemon.connect().timeout(Duration.ofSeconds(60));
                for (int i = 0; i < setup.structuredGuests().size(); i++) {
                    guests.add(NbdGuest.connect(nbd, "disk", setup.structuredGuests().get(i), "g" + i));
                }
                verifyWholeDisk(0, "initial content");
                for (Numbered n : schedule.steps()) {
                    runStep(n);
                }
                endLeftoverJob();
                for (NbdGuest g : guests) {
                    g.close();
                }
                qmp.executeOk("quit");
                if (daemon.waitFor(Duration.ofSeconds(30)) != 0) {
                    throw new CompositionFailure(Check.QMP, "daemon did not exit cleanly after quit");
                }
            } catch (CompositionFailure f) {
                throw withDaemonLog(f, daemon);
            } finally {
                if (qmp != null) {
                    qmp.close();
                }
            }
        }
        expectChainEqualsModel("after quit");
        for (String layer : state.chain()) {
            if (setup.format().equals("qcow2")) {
                String problem = Images.checkProblem(Images.file(dir, layer, setup.format()));
                if (problem != null) {
                    throw new CompositionFailure(Check.CHAIN, problem);
                }
            }
        }
        return new Figures(schedule.steps().size(), skipped, guestOps, jobs, jobEnds);
    }

    private static CompositionFailure withDaemonLog(CompositionFailure f, DaemonProcess daemon) {
        String[] lines = daemon.stderr().split("\n");
        int from = Math.max(0, lines.length - 30);
        String tail = String.join("\n", java.util.Arrays.copyOfRange(lines, from, lines.length));
        return tail.isBlank() ? f : f.withNote("\n--- daemon stderr (last lines) ---\n" + tail);
    }

    private void runStep(Numbered n) throws Exception {
        Step step = n.step();
        try {
            reapEndedJob();
            if (!state.allows(step)) {
                skipped++;
                log.add(String.format("%3d %s  -- skipped: the job ended earlier (chain %s)", n.index(),
                        step.describe(), state.chain()));
                return;
            }
            log.add(String.format("%3d %s", n.index(), step.describe()));
            execute(step, n.index());
            reapEndedJob();
            verifyWholeDisk(n.index(), "after step " + n.index());
        } catch (CompositionFailure f) {
            throw f.atStep(n.index(), step.describe());
        } catch (IOException e) {
            throw new CompositionFailure(Check.GUEST_REQUEST, e.toString(), e).atStep(n.index(), step.describe());
        } catch (AssertionError e) { // QmpTestClient.executeOk on an error reply
            throw new CompositionFailure(Check.QMP, e.getMessage(), e).atStep(n.index(), step.describe());
        }
    }

    private void execute(Step step, int index) throws Exception {
        switch (step) {
            case Step.Guest g -> guestIo(g.ops(), false);
            case Step.StopCont s -> guestIo(s.ops(), true);
            case Step.StartBackup b -> startBackup(b);
            case Step.StartMirror m -> startMirror(m);
            case Step.StartStream s -> startStream(s);
            case Step.StartCommit c -> startCommit(c);
            case Step.Pause p -> {
                if (verb("block-job-pause", Map.of())) {
                    state.paused(true);
                }
            }
            case Step.Resume r -> {
                if (verb("block-job-resume", Map.of())) {
                    state.paused(false);
                }
            }
            case Step.SetSpeed s -> verb("block-job-set-speed", Map.of("speed", s.speed()));
            case Step.Cancel c -> cancel(c.force());
            case Step.AwaitEnd a -> awaitEnd();
            case Step.FinishReady f -> finishReady(f.complete());
        }
    }

    // ==== guest I/O ===============================================================================

    /**
     * Sends the ops (each guest pipelines its own, the guests at once), waits for every reply,
     * checks reads against the model as it was (the step's ranges are disjoint), then applies the
     * changes. With {@code stopped}, the run state is stopped around the requests and no reply may
     * come before {@code cont}.
     */
    private void guestIo(List<GuestOp> ops, boolean stopped) throws Exception {
        Map<Integer, List<GuestOp>> byGuest = new LinkedHashMap<>();
        for (GuestOp op : ops) {
            byGuest.computeIfAbsent(op.client(), k -> new ArrayList<>()).add(op);
        }
        if (stopped) {
            qmp.executeOk("stop");
        }
        Map<Integer, List<NbdGuest.Reply>> replies = new LinkedHashMap<>();
        Map<Integer, AtomicBoolean> answered = new LinkedHashMap<>();
        CountDownLatch sent = new CountDownLatch(byGuest.size());
        List<Thread> threads = new ArrayList<>();
        Map<Integer, Throwable> failures = new java.util.concurrent.ConcurrentHashMap<>();
        for (Map.Entry<Integer, List<GuestOp>> e : byGuest.entrySet()) {
            NbdGuest g = guests.get(e.getKey());
            List<NbdGuest.Request> requests = e.getValue().stream().map(ScheduleRunner::request).toList();
            AtomicBoolean flag = new AtomicBoolean();
            answered.put(e.getKey(), flag);
            threads.add(Thread.ofVirtual().name("guest-" + g.label()).start(() -> {
                try {
                    List<NbdGuest.Reply> r = g.submit(requests, flag, sent);
                    synchronized (replies) {
                        replies.put(e.getKey(), r);
                    }
                } catch (Throwable t) {
                    failures.put(e.getKey(), t);
                }
            }));
        }
        if (stopped) {
            // Bounded: a server that stops reading a held connection may keep a sender from
            // finishing, which is allowed; the check below then covers what did arrive.
            sent.await(5, TimeUnit.SECONDS);
            JsonNode status = qmp.executeOk("query-status");
            if (status.path("running").asBoolean(true)) {
                throw new CompositionFailure(Check.STOPPED_IO, "query-status after stop says running: " + status);
            }
            for (Map.Entry<Integer, AtomicBoolean> a : answered.entrySet()) {
                if (a.getValue().get()) {
                    throw new CompositionFailure(Check.STOPPED_IO, "g" + a.getKey()
                            + " got a reply while the run state was stopped");
                }
            }
            qmp.executeOk("cont");
        }
        joinAll(threads);
        if (!failures.isEmpty()) {
            Map.Entry<Integer, Throwable> f = failures.entrySet().iterator().next();
            throw new CompositionFailure(Check.GUEST_REQUEST, "g" + f.getKey() + ": " + f.getValue(), f.getValue());
        }
        List<GuestOp.Trim> trims = new ArrayList<>();
        // reads first: they saw the disk before this step's changes (disjoint ranges)
        for (Map.Entry<Integer, List<GuestOp>> e : byGuest.entrySet()) {
            for (int i = 0; i < e.getValue().size(); i++) {
                GuestOp op = e.getValue().get(i);
                NbdGuest.Reply r = replies.get(e.getKey()).get(i);
                guestOps++;
                if (r.error() != 0 && !(op instanceof GuestOp.Zero z && z.fast() && r.error() == ENOTSUP)) {
                    throw new CompositionFailure(Check.GUEST_REQUEST, op.describe() + " failed with errno " + r.error());
                }
                String what = op.describe() + (guests.get(op.client()).structured() ? " (structured)" : " (simple)");
                switch (op) {
                    case GuestOp.Read rd -> model.checkRead(rd.offset(), r.data(), what);
                    case GuestOp.Status st -> model.checkStatus(st.offset(), st.length(), r.extents(), what);
                    default -> {
                    }
                }
            }
        }
        for (Map.Entry<Integer, List<GuestOp>> e : byGuest.entrySet()) {
            for (int i = 0; i < e.getValue().size(); i++) {
                GuestOp op = e.getValue().get(i);
                NbdGuest.Reply r = replies.get(e.getKey()).get(i);
                switch (op) {
                    case GuestOp.Write w -> model.write(w.offset(), w.data());
                    case GuestOp.Zero z -> {
                        if (r.error() == 0) {
                            model.zero(z.offset(), z.length());
                        }
                    }
                    case GuestOp.Trim t -> trims.add(t);
                    default -> {
                    }
                }
            }
        }
        for (GuestOp.Trim t : trims) {
            NbdGuest g = guests.get(t.client());
            byte[] back = submitOne(g, List.of(new NbdGuest.Request(NbdGuest.CMD_READ, 0, t.offset(), t.length(),
                    null))).getFirst().data();
            model.adoptTrimmed(t.offset(), back, "read back after " + t.describe());
        }
    }

    private static NbdGuest.Request request(GuestOp op) {
        return switch (op) {
            case GuestOp.Write w -> new NbdGuest.Request(NbdGuest.CMD_WRITE, w.fua() ? NbdGuest.FLAG_FUA : 0,
                    w.offset(), w.length(), w.data());
            case GuestOp.Zero z -> new NbdGuest.Request(NbdGuest.CMD_WRITE_ZEROES,
                    (z.noHole() ? NbdGuest.FLAG_NO_HOLE : 0) | (z.fast() ? NbdGuest.FLAG_FAST_ZERO : 0),
                    z.offset(), z.length(), null);
            case GuestOp.Trim t -> new NbdGuest.Request(NbdGuest.CMD_TRIM, 0, t.offset(), t.length(), null);
            case GuestOp.Read r -> new NbdGuest.Request(NbdGuest.CMD_READ, 0, r.offset(), r.length(), null);
            case GuestOp.Status s -> new NbdGuest.Request(NbdGuest.CMD_BLOCK_STATUS, 0, s.offset(), s.length(), null);
            case GuestOp.Flush f -> new NbdGuest.Request(NbdGuest.CMD_FLUSH, 0, 0, 0, null);
        };
    }

    private static void joinAll(List<Thread> threads) throws InterruptedException {
        long deadline = System.nanoTime() + IO.toNanos();
        for (Thread t : threads) {
            long left = deadline - System.nanoTime();
            if (left <= 0 || !t.join(Duration.ofNanos(left))) {
                throw new CompositionFailure(Check.GUEST_REQUEST, "no reply within " + IO + " (" + t.getName() + ")");
            }
        }
    }

    /** One guest's requests with a time limit; an error reply fails. */
    private List<NbdGuest.Reply> submitOne(NbdGuest g, List<NbdGuest.Request> requests) throws Exception {
        Object[] result = new Object[1];
        Thread t = Thread.ofVirtual().name("guest-" + g.label()).start(() -> {
            try {
                result[0] = g.submit(requests, null, new CountDownLatch(1));
            } catch (Throwable e) {
                result[0] = e;
            }
        });
        joinAll(List.of(t));
        if (result[0] instanceof Throwable e) {
            throw new CompositionFailure(Check.GUEST_REQUEST, g.label() + ": " + e, e);
        }
        @SuppressWarnings("unchecked")
        List<NbdGuest.Reply> replies = (List<NbdGuest.Reply>) result[0];
        for (int i = 0; i < replies.size(); i++) {
            if (replies.get(i).error() != 0) {
                NbdGuest.Request rq = requests.get(i);
                throw new CompositionFailure(Check.GUEST_REQUEST, g.label() + " request type " + rq.type() + " at "
                        + rq.offset() + "+" + rq.length() + " failed with errno " + replies.get(i).error());
            }
        }
        return replies;
    }

    /** Guest {@code turn % n} reads the whole disk (and, if structured, walks its block status). */
    private void verifyWholeDisk(int turn, String when) throws Exception {
        NbdGuest g = guests.get(turn % guests.size());
        String kind = g.structured() ? "structured" : "simple";
        List<NbdGuest.Request> reads = new ArrayList<>();
        for (long off = 0; off < model.size(); off += MIB) {
            reads.add(new NbdGuest.Request(NbdGuest.CMD_READ, 0, off, (int) Math.min(MIB, model.size() - off), null));
        }
        List<NbdGuest.Reply> replies = submitOne(g, reads);
        for (int i = 0; i < reads.size(); i++) {
            model.checkRead(reads.get(i).offset(), replies.get(i).data(),
                    "whole-disk read by " + g.label() + " (" + kind + ") " + when + describeJob());
        }
        if (g.structured()) {
            long pos = 0;
            while (pos < model.size()) {
                int len = (int) (model.size() - pos);
                List<long[]> extents = submitOne(g, List.of(new NbdGuest.Request(NbdGuest.CMD_BLOCK_STATUS, 0, pos,
                        len, null))).getFirst().extents();
                model.checkStatus(pos, len, extents, "block status walk by " + g.label() + " " + when + describeJob());
                pos += extents.stream().mapToLong(e -> e[0]).sum();
            }
        }
    }

    private String describeJob() {
        return running == null ? "" : " while job " + state.job().id() + " (" + state.job().shape()
                + (state.job().paused() ? ", paused" : "") + ") runs";
    }

    // ==== jobs ====================================================================================

    private Path top() {
        return Images.file(dir, state.chain().getFirst(), setup.format());
    }

    private Path layerFile(int index) {
        return Images.file(dir, state.chain().get(index), setup.format());
    }

    private void startBackup(Step.StartBackup b) throws Exception {
        if (b.sync().equals("incremental")) {
            startChainLink(b);
            return;
        }
        // sync=none needs a backing link to the source (fleecing); sync=top one to the source's backing
        String format = b.sync().equals("full") ? setup.format() : "qcow2";
        if (b.sync().equals("top") && setup.format().equals("raw")) {
            format = "raw"; // a raw source has no backing: top is a full backup (QEMU's drive_backup_prepare)
        }
        Path target = dir.resolve(b.id() + "." + format);
        Map<String, Object> args = new LinkedHashMap<>(Map.of("job-id", b.id(), "device", "drive0", "target",
                target.toString(), "format", format, "sync", b.sync(), "speed", b.speed()));
        if (!b.sync().equals("none")) { // fleecing copies synchronously: the option is refused there
            withCbwBuffer(args);
        }
        startJob(b, "drive-backup", args, target);
    }

    /** The schedule's save-buffer size for a backup (Setup.cbwBuffer), unless it is the default. */
    private void withCbwBuffer(Map<String, Object> backupArgs) {
        if (setup.cbwBuffer() >= 0) {
            backupArgs.put("x-perf", Map.of("cbw-buffer-size", setup.cbwBuffer()));
        }
    }

    /**
     * The next link of the checkpoint chain (libvirt's push mode): an incremental from bitmap
     * {@code chk} into a qcow2 whose backing file is the previous link, attached with
     * {@code backing: null} so it holds only the delta; when there is no usable checkpoint (none
     * yet, the last full one was cancelled, or the device moved to another node by a pivot and the
     * bitmap stayed behind), a full backup in a transaction that adds {@code chk} at the same
     * point in time. Either way the restored chain must equal the disk at the start.
     */
    private void startChainLink(Step.StartBackup b) throws Exception {
        String node = qmp.executeOk("query-block").path(0).path("inserted").path("node-name").asText();
        boolean hasChk = false;
        for (JsonNode n : qmp.executeOk("query-named-block-nodes", Map.of("flat", true))) {
            if (n.path("node-name").asText().equals(node)) {
                for (JsonNode bm : n.path("dirty-bitmaps")) {
                    hasChk |= bm.path("name").asText().equals(CHECKPOINT);
                }
            }
        }
        boolean full = chainTip == null || !hasChk || !node.equals(checkpointNode);
        Path target = dir.resolve(b.id() + ".qcow2");
        long size = model.snapshot().length;
        if (full) {
            if (hasChk) {
                qmp.executeOk("block-dirty-bitmap-remove", Map.of("node", node, "name", CHECKPOINT));
            }
            ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", target.toString(),
                    Long.toString(size));
        } else {
            ExternalTools.ok("qemu-img", "create", "-q", "-f", "qcow2", "-b", chainTip.toString(),
                    "-F", "qcow2", target.toString(), Long.toString(size));
        }
        qmp.executeOk("blockdev-add", QmpTestClient.json("{\"driver\":\"qcow2\",\"node-name\":\"" + b.id()
                + "\",\"file\":{\"driver\":\"file\",\"filename\":\"" + target + "\"},\"backing\":null}"));
        Map<String, Object> backup = new LinkedHashMap<>(Map.of("job-id", b.id(), "device", "drive0", "target", b.id(),
                "speed", b.speed()));
        List<Object> actions = new ArrayList<>();
        if (full) {
            backup.put("sync", "full");
            actions.add(Map.of("type", "block-dirty-bitmap-add", "data", Map.of("node", node, "name", CHECKPOINT)));
        } else {
            backup.put("sync", "incremental");
            backup.put("bitmap", CHECKPOINT);
        }
        withCbwBuffer(backup);
        actions.add(Map.of("type", "blockdev-backup", "data", backup));
        log.add("      " + (full ? "full, new checkpoint on " + node : "incremental from " + CHECKPOINT + " over "
                + chainTip.getFileName()));
        startJob(b, "transaction", Map.of("actions", actions), target);
        chainLink = new ChainLink(b.id(), node, full);
    }

    /**
     * The chain link's end: its node goes; a completed link is the new tip (its bitmap now holds
     * the writes since its start); a cancelled full one leaves no checkpoint (its bitmap counts
     * from a point no complete backup has), a cancelled incremental leaves the checkpoint as it
     * was (the bitmap got its bits back).
     */
    private void endChainLink(Running r, Outcome outcome) throws Exception {
        ChainLink link = chainLink;
        chainLink = null;
        qmp.executeOk("blockdev-del", Map.of("node-name", link.node()));
        if (outcome == Outcome.COMPLETED) {
            expectFile(Check.BACKUP_TARGET, r.target(), r.pointInTime(), link.node() + " chain restored at its start point");
            chainTip = r.target();
            checkpointNode = link.bitmapNode();
        } else if (link.full()) {
            qmp.executeOk("block-dirty-bitmap-remove", Map.of("node", link.bitmapNode(), "name", CHECKPOINT));
            chainTip = null;
        }
    }

    private void startMirror(Step.StartMirror m) throws Exception {
        Path target = Images.file(dir, m.id(), setup.format());
        startJob(m, "drive-mirror", Map.of("job-id", m.id(), "device", "drive0", "target", target.toString(),
                "format", setup.format(), "sync", m.sync(), "speed", m.speed(), "copy-mode", m.copyMode()), target);
    }

    private void startStream(Step.StartStream s) throws Exception {
        Map<String, Object> args = new LinkedHashMap<>(Map.of("job-id", s.id(), "device", "drive0", "speed", s.speed()));
        if (s.baseIndex() >= 0) {
            args.put("base", layerFile(s.baseIndex()).toString());
        }
        startJob(s, "block-stream", args, null);
    }

    private void startCommit(Step.StartCommit c) throws Exception {
        Map<String, Object> args = new LinkedHashMap<>(Map.of("job-id", c.id(), "device", "drive0", "speed", c.speed()));
        if (!c.active()) {
            args.put("top", layerFile(c.topIndex()).toString());
            args.put("base", layerFile(c.baseIndex()).toString());
        }
        startJob(c, "block-commit", args, c.active() ? layerFile(state.chain().size() - 1) : null);
    }

    private void startJob(Step step, String command, Map<String, Object> args, Path target) throws Exception {
        JsonNode r = qmp.execute(command, args);
        if (r.has("error")) {
            throw new CompositionFailure(Check.QMP, command + " " + args + " -> " + r.get("error"));
        }
        // the point in time: no guest request is in flight between steps
        state.start(step);
        running = new Running(target, model.snapshot(), false);
        jobs++;
    }

    /**
     * A verb on the running job; false when the job turned out to have ended already (its end
     * event is handled then). Any other refusal fails the schedule.
     */
    private boolean verb(String command, Map<String, Object> extra) throws Exception {
        Map<String, Object> args = new LinkedHashMap<>(extra);
        args.put("device", state.job().id());
        JsonNode r = qmp.execute(command, args);
        if (!r.has("error")) {
            return true;
        }
        String desc = r.at("/error/desc").asText();
        boolean finishing = r.at("/error/class").asText().equals("DeviceNotActive")
                || desc.matches(".*in state '(waiting|pending|aborting|concluded|null)'.*");
        if (finishing) {
            JsonNode end = awaitEvent(this::isEndOfRunningJob, Duration.ofSeconds(30));
            if (end != null) {
                log.add("      (" + command + " refused: " + desc + "; the job had ended)");
                handleEnd(end);
                return false;
            }
        }
        throw new CompositionFailure(Check.QMP, command + " " + args + " -> " + r.get("error"));
    }

    private void resumeIfPaused() throws Exception {
        if (running != null && state.job().paused() && verb("block-job-resume", Map.of())) {
            state.paused(false);
        }
    }

    private void cancel(boolean force) throws Exception {
        if (!force) {
            resumeIfPaused(); // block-job-cancel refuses a paused job without force
        }
        if (running != null && verb("block-job-cancel", Map.of("force", force))) {
            awaitEnd(JOB_END);
        }
    }

    private void awaitEnd() throws Exception {
        resumeIfPaused();
        if (running != null && verb("block-job-set-speed", Map.of("speed", 0))) {
            awaitEnd(JOB_END);
        }
    }

    private void finishReady(boolean complete) throws Exception {
        resumeIfPaused();
        if (running == null || !verb("block-job-set-speed", Map.of("speed", 0))) {
            return;
        }
        String id = state.job().id();
        JsonNode ev = awaitEvent(e -> isEndOfRunningJob(e) || (e.path("event").asText().equals("BLOCK_JOB_READY")
                && e.at("/data/device").asText().equals(id)), JOB_END);
        if (ev == null) {
            throw new CompositionFailure(Check.JOB, "job " + id + " not READY within " + JOB_END);
        }
        if (isEndOfRunningJob(ev)) {
            handleEnd(ev);
            return;
        }
        if (complete) {
            running = new Running(running.target(), running.pointInTime(), true);
            if (!verb("block-job-complete", Map.of())) {
                return;
            }
        } else if (!verb("block-job-cancel", Map.of())) {
            return;
        }
        awaitEnd(JOB_END);
    }

    private void awaitEnd(Duration timeout) throws Exception {
        if (running == null) {
            return;
        }
        JsonNode end = awaitEvent(this::isEndOfRunningJob, timeout);
        if (end == null) {
            throw new CompositionFailure(Check.JOB, "job " + state.job().id() + " did not end within " + timeout
                    + "; query-block-jobs: " + qmp.executeOk("query-block-jobs"));
        }
        handleEnd(end);
    }

    /** Handles the running job's end if its event has arrived (a job may finish between steps). */
    private void reapEndedJob() throws Exception {
        if (running == null) {
            return;
        }
        events.addAll(qmp.drainEvents());
        for (JsonNode e : events) {
            if (isEndOfRunningJob(e)) {
                log.add("      (job " + state.job().id() + " ended on its own: " + e.path("event").asText() + ")");
                handleEnd(e);
                return;
            }
        }
    }

    private boolean isEndOfRunningJob(JsonNode e) {
        String name = e.path("event").asText();
        return running != null && (name.equals("BLOCK_JOB_COMPLETED") || name.equals("BLOCK_JOB_CANCELLED"))
                && e.at("/data/device").asText().equals(state.job().id());
    }

    /** The first event (already seen or arriving within {@code timeout}) that matches; null if none. */
    private JsonNode awaitEvent(Predicate<JsonNode> match, Duration timeout) throws InterruptedException {
        events.addAll(qmp.drainEvents());
        for (JsonNode e : events) {
            if (match.test(e)) {
                return e;
            }
        }
        long deadline = System.nanoTime() + timeout.toNanos();
        while (true) {
            long left = deadline - System.nanoTime();
            JsonNode e = left <= 0 ? null : qmp.events().poll(left, TimeUnit.NANOSECONDS);
            if (e == null) {
                return null;
            }
            events.add(e);
            if (match.test(e)) {
                return e;
            }
        }
    }

    /** The checks a job's end calls for, then the chain moves on by the real outcome. */
    private void handleEnd(JsonNode end) throws Exception {
        Running r = running;
        String id = state.job().id();
        ScheduleState.Shape shape = state.job().shape();
        events.removeIf(e -> e.at("/data/device").asText().equals(id));
        if (end.at("/data").has("error")) {
            throw new CompositionFailure(Check.JOB, "job " + id + " (" + shape + ") ended with error: " + end);
        }
        Outcome outcome = end.path("event").asText().equals("BLOCK_JOB_CANCELLED") ? Outcome.CANCELLED
                : shape.readyFirst() && !r.completeIssued() ? Outcome.COMPLETED_WITHOUT_PIVOT : Outcome.COMPLETED;
        log.add("      job " + id + " (" + shape + ") ended: " + outcome);
        jobEnds.merge(shape + " " + outcome, 1, Integer::sum);
        running = null;
        state.end(outcome);
        String file = qmp.executeOk("query-block").path(0).path("inserted").path("file").asText();
        if (!file.equals(top().toString())) {
            throw new CompositionFailure(Check.CHAIN, "after " + id + " (" + shape + ", " + outcome
                    + ") the device's image is " + file + ", expected " + top());
        }
        flushAll(); // what follows reads files the daemon has open
        switch (shape) {
            case BACKUP_INCREMENTAL -> endChainLink(r, outcome);
            case BACKUP_FULL, BACKUP_TOP -> {
                if (outcome == Outcome.COMPLETED) {
                    expectFile(Check.BACKUP_TARGET, r.target(), r.pointInTime(), id + " target at its start point");
                }
            }
            // cancelling is a fleecing backup's normal end: old data for every cluster written since
            case BACKUP_NONE -> expectFile(Check.BACKUP_TARGET, r.target(), r.pointInTime(),
                    id + " sync=none target over the source at its start point");
            case MIRROR_FULL, MIRROR_TOP, COMMIT_ACTIVE -> {
                if (outcome == Outcome.COMPLETED_WITHOUT_PIVOT) {
                    expectFile(Check.MIRROR_TARGET, r.target(), model.snapshot(), id + " target after cancel at READY");
                }
            }
            default -> {
            }
        }
        expectChainEqualsModel("after job " + id + " (" + shape + ", " + outcome + ")");
    }

    private void expectFile(Check check, Path file, byte[] expected, String what) throws Exception {
        String target = file.getFileName().toString();
        String diff = DiskModel.difference(expected, Images.readComposed(file, target.substring(target.lastIndexOf('.')
                + 1), dir));
        if (diff != null) {
            throw new CompositionFailure(check, what + " (" + file.getFileName() + "): " + diff);
        }
    }

    private void expectChainEqualsModel(String when) throws Exception {
        String diff = DiskModel.difference(model.snapshot(), Images.readComposed(top(), setup.format(), dir));
        if (diff != null) {
            throw new CompositionFailure(Check.CHAIN, when + ": the chain " + state.chain() + " composed: " + diff);
        }
    }

    private void flushAll() throws Exception {
        submitOne(guests.getFirst(), List.of(new NbdGuest.Request(NbdGuest.CMD_FLUSH, 0, 0, 0, null)));
    }

    /** A shrunk schedule may stop with a job running: cancel it (no checks: not part of the schedule). */
    private void endLeftoverJob() throws Exception {
        reapEndedJob();
        if (running != null) {
            log.add("      (end of schedule: cancelling " + state.job().id() + ")");
            qmp.execute("block-job-cancel", Map.of("device", state.job().id(), "force", true));
            if (state.job().paused()) {
                qmp.execute("block-job-resume", Map.of("device", state.job().id()));
            }
            awaitEnd(JOB_END);
        }
    }
}
