package jblockd.client;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import jblockd.qapi.ActionCompletionMode;
import jblockd.qapi.ErrorClass;
import jblockd.qapi.JobStatus;
import jblockd.qapi.JobType;
import jblockd.qapi.MirrorSyncMode;
import jblockd.qapi.RunStatus;
import jblockd.qapi.TransactionActionKind;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * What the client must do against any QMP peer with a raw {@code drive0} (jblockd or QEMU 7.2
 * itself); subclasses supply the peer.
 */
abstract class QmpClientContract {
    static final long IMAGE_SIZE = 4L << 20;
    static final Duration WAIT = Duration.ofSeconds(30);

    @TempDir
    Path dir;
    Path image;
    QmpPeer peer;
    QmpClient qmp;

    abstract QmpPeer startPeer(Path dir, Path image) throws Exception;

    @BeforeEach
    void start() throws Exception {
        image = TestTools.patternedRaw(dir.resolve("source.img"), IMAGE_SIZE);
        peer = startPeer(dir, image);
        qmp = QmpClient.connectUnix(peer.socket());
    }

    @AfterEach
    void stopPeer() {
        if (qmp != null) {
            qmp.close();
        }
        if (peer != null) {
            peer.close();
        }
    }

    @Test
    void greetingAndSessionQueries() {
        assertThat(qmp.greeting().path("QMP").path("version").path("qemu").path("major").asInt()).isEqualTo(7);
        VersionInfo v = qmp.queryVersion();
        assertThat(v.major()).isEqualTo(7);
        assertThat(v.minor()).isEqualTo(2);
        assertThat(qmp.queryCommands()).contains("qmp_capabilities", "query-version", "quit", "query-block");
        assertThat(qmp.block().queryBlock()).extracting(BlockInfo::device).contains("drive0");
    }

    @Test
    void stopAndContDeliverStopAndResumeEvents() throws Exception {
        assumeTrue(peer.supports("stop"), "no stop/cont yet");
        List<String> seen = new CopyOnWriteArrayList<>();
        // the listener runs on its own dispatch path: the stream may see RESUME before it does
        java.util.concurrent.CountDownLatch listenerSawResume = new java.util.concurrent.CountDownLatch(1);
        try (EventStream events = qmp.events(); Subscription sub = qmp.onEvent(ev -> {
            seen.add(ev.name());
            if (ev.name().equals(QmpEvent.RESUME)) {
                listenerSawResume.countDown();
            }
        })) {
            qmp.stop();
            QmpEvent stop = events.await(QmpEvent.STOP, WAIT);
            assertThat(stop).isNotNull();
            assertThat(stop.data().isEmpty()).isTrue();
            assertThat(stop.timestamp().getEpochSecond()).isGreaterThan(1_600_000_000L);
            assertThat(qmp.queryStatus().status()).isEqualTo(RunStatus.PAUSED);
            assertThat(qmp.queryStatus().running()).isFalse();
            qmp.cont();
            assertThat(events.await(QmpEvent.RESUME, WAIT)).isNotNull();
            assertThat(qmp.queryStatus().status()).isEqualTo(RunStatus.RUNNING);
            assertThat(listenerSawResume.await(WAIT.toMillis(), java.util.concurrent.TimeUnit.MILLISECONDS)).isTrue();
        }
        assertThat(seen).containsSubsequence("STOP", "RESUME");
    }

    @Test
    void backupProgressListenerSeesIncreasingOffsetsAndFinalHundredPercent() throws Exception {
        assumeJobs();
        Path target = dir.resolve("target.img");
        List<JobProgress> seen = new CopyOnWriteArrayList<>();
        // 4 MiB (3 of data) at 512 KiB/s: the limiter lets the first chunks through at once and
        // then holds the job for seconds, so polls (every 100 ms) must catch an offset between
        // the start and the end. How many distinct offsets they catch depends on where the chunk
        // boundaries fall: two CI runs saw only two (a burst, then the end), so none is counted.
        Job job = qmp.jobs().driveBackup(DriveBackup.of("drive0", target.toString())
                .sync(MirrorSyncMode.FULL).format("raw").speed(512L << 10));
        job.pollInterval(Duration.ofMillis(100)).onProgress(seen::add);
        assertThat(job.id()).isEqualTo("drive0"); // learnt from JOB_STATUS_CHANGE created (jobs.md §8)
        JobResult r = job.awaitCompletion(WAIT);

        assertThat(r.outcome()).isEqualTo(JobResult.Outcome.COMPLETED);
        assertThat(r.type()).isEqualTo(JobType.BACKUP);
        assertThat(r.len()).isEqualTo(IMAGE_SIZE);
        assertThat(r.offset()).isEqualTo(IMAGE_SIZE);
        List<Long> offsets = new ArrayList<>();
        for (JobProgress p : seen) {
            offsets.add(p.offset());
        }
        assertThat(offsets).isSorted();
        assertThat(offsets).as("progress seen mid-job").anyMatch(o -> o > 0 && o < IMAGE_SIZE);
        assertThat(offsets.getLast()).isEqualTo(IMAGE_SIZE);
        JobProgress last = seen.get(seen.size() - 1);
        assertThat(last.finished()).isTrue();
        assertThat(last.percent()).isEqualTo(100.0);
        assertThat(seen.stream().anyMatch(p -> p.rate() > 0 && p.eta() != null)).isTrue();
        assertThat(TestTools.qemuImgCompare(image, target)).isZero();
    }

    @Test
    void jobEventsArriveOnTheEventStream() throws Exception {
        assumeJobs();
        try (EventStream events = qmp.events()) {
            Job job = qmp.jobs().driveBackup(DriveBackup.of("drive0", dir.resolve("t.img").toString())
                    .sync(MirrorSyncMode.FULL).format("raw").jobId("bk1"));
            assertThat(job.awaitCompletion(WAIT).succeeded()).isTrue();
            List<JobStatus> statuses = new ArrayList<>();
            QmpEvent ev;
            while ((ev = events.poll(Duration.ofSeconds(2))) != null) {
                ev.asJobStatusChange().filter(c -> c.id().equals("bk1")).ifPresent(c -> statuses.add(c.status()));
                if (ev.name().equals(QmpEvent.BLOCK_JOB_COMPLETED)) {
                    QmpEvent.BlockJobEvent c = ev.asBlockJobEvent().orElseThrow();
                    assertThat(c.device()).isEqualTo("bk1");
                    assertThat(c.error()).isNull();
                    assertThat(c.offset()).isEqualTo(IMAGE_SIZE);
                }
                if (statuses.contains(JobStatus.NULL)) {
                    break;
                }
            }
            assertThat(statuses).containsSubsequence(JobStatus.CREATED, JobStatus.RUNNING, JobStatus.WAITING,
                    JobStatus.PENDING, JobStatus.CONCLUDED, JobStatus.NULL);
        }
    }

    @Test
    void aTransactionStartsItsBackupsAndReturnsTheirJobs() throws Exception {
        assumeJobs();
        Path target = dir.resolve("tx.img");
        List<Job> jobs = qmp.jobs().transaction(Transaction.of()
                .driveBackup(DriveBackup.of("drive0", target.toString()).sync(MirrorSyncMode.FULL).format("raw"))
                .completionMode(ActionCompletionMode.GROUPED));
        assertThat(jobs).extracting(Job::id).containsExactly("drive0"); // the device's name (jobs.md §8)
        JobResult r = jobs.get(0).awaitCompletion(WAIT);
        assertThat(r.outcome()).isEqualTo(JobResult.Outcome.COMPLETED);
        assertThat(TestTools.qemuImgCompare(image, target)).isZero();
        assertThat(qmp.jobs().transaction(Transaction.of())).isEmpty();
    }

    @Test
    void aFailedTransactionThrowsItsFirstErrorAndLeavesNoJob() {
        assumeJobs();
        assertThatThrownBy(() -> qmp.jobs().transaction(Transaction.of()
                .driveBackup(DriveBackup.of("drive0", dir.resolve("tx.img").toString()).jobId("tx1")
                        .sync(MirrorSyncMode.FULL).format("raw"))
                .abort()))
                .isInstanceOfSatisfying(QmpException.class, e -> {
                    assertThat(e.errorClass()).isEqualTo(ErrorClass.GENERIC_ERROR);
                    assertThat(e.desc()).isEqualTo("Transaction aborted using Abort action");
                    assertThat(e.command()).isEqualTo("transaction");
                });
        assertThat(qmp.jobs().queryBlockJobs()).isEmpty();
        // any action type by name: grouped refuses it in its turn (QEMU 7.2's text)
        assertThatThrownBy(() -> qmp.jobs().transaction(Transaction.of()
                .action(TransactionActionKind.BLOCK_DIRTY_BITMAP_ADD, java.util.Map.of("node", "drive0", "name", "b"))
                .completionMode(ActionCompletionMode.GROUPED)))
                .isInstanceOfSatisfying(QmpException.class, e -> assertThat(e.desc()).isEqualTo(
                        "Action 'block-dirty-bitmap-add' does not support Transaction property completion-mode = grouped"));
    }

    @Test
    void pauseResumeAndCancelThroughTheJobHandle() throws Exception {
        assumeJobs();
        Job job = qmp.jobs().driveBackup(DriveBackup.of("drive0", dir.resolve("t.img").toString())
                .sync(MirrorSyncMode.FULL).format("raw").speed(256 << 10));
        job.pause();
        waitFor(() -> qmp.jobs().queryBlockJobs().get(0).paused());
        assertThat(qmp.jobs().queryBlockJobs().get(0).status()).isEqualTo(JobStatus.PAUSED);
        job.setSpeed(512 << 10);
        assertThat(qmp.jobs().queryBlockJobs().get(0).speed()).isEqualTo(512 << 10);
        job.resume();
        waitFor(() -> job.progress().status() == JobStatus.RUNNING);
        job.cancel();
        JobResult r = job.awaitCompletion(WAIT);
        assertThat(r.outcome()).isEqualTo(JobResult.Outcome.CANCELLED);
        assertThat(r.offset()).isLessThan(IMAGE_SIZE);
        assertThat(qmp.jobs().queryBlockJobs()).isEmpty();
    }

    @Test
    void graphAndExportCommandsRoundTrip() throws Exception {
        assumeTrue(peer.supports("block-export-add") && peer.supports("nbd-server-add"), "no exports yet");
        Path extra = TestTools.patternedRaw(dir.resolve("extra.img"), 1 << 20);
        qmp.block().blockdevAdd(Blockdev.raw("extra", Blockdev.file("extra-file", extra.toString())));
        assertThat(qmp.block().queryNamedBlockNodes()).extracting(NodeInfo::nodeName).contains("extra", "extra-file");
        NodeInfo node = qmp.block().queryNamedBlockNodes().stream().filter(n -> n.nodeName().equals("extra"))
                .findFirst().orElseThrow();
        assertThat(node.driver()).isEqualTo("raw");
        assertThat(node.virtualSize()).isEqualTo(1 << 20);

        Path nbd = dir.resolve("nbd.sock");
        qmp.exports().nbdServerStartUnix(nbd.toString());
        qmp.exports().blockExportAdd("exp1", "extra", "extra", false);
        assertThat(qmp.exports().queryBlockExports()).containsExactly(new ExportInfo("exp1", "nbd", "extra", false));
        if (TestTools.onPath("nbdinfo")) {
            StringBuilder size = new StringBuilder();
            assertThat(TestTools.run(List.of("nbdinfo", "--size", "nbd+unix:///extra?socket=" + nbd), size)).isZero();
            assertThat(size.toString().strip()).isEqualTo(Long.toString(1 << 20));
        }
        qmp.exports().blockExportDel("exp1", false);
        waitFor(() -> qmp.exports().queryBlockExports().isEmpty());
        qmp.exports().nbdServerAdd("drive0", "d0", false);
        assertThat(qmp.exports().queryBlockExports()).extracting(ExportInfo::id).containsExactly("d0");
        qmp.exports().nbdServerRemove("d0", false);
        waitFor(() -> qmp.exports().queryBlockExports().isEmpty());
        qmp.exports().nbdServerStop();
        qmp.block().blockdevDel("extra");
        assertThat(qmp.block().queryNamedBlockNodes()).extracting(NodeInfo::nodeName).doesNotContain("extra");
    }

    @Test
    void reopenSnapshotAndChangeBackingFile() throws Exception {
        assumeTrue(peer.supports("blockdev-reopen") && peer.supports("change-backing-file"), "no reopen yet");
        assumeTrue(TestTools.onPath("qemu-img"), "qemu-img not installed");
        Path base = dir.resolve("base.qcow2");
        assertThat(TestTools.run(List.of("qemu-img", "create", "-q", "-f", "qcow2", base.toString(), "1M"),
                new StringBuilder())).isZero();
        qmp.block().blockdevAdd(Blockdev.qcow2("base", Blockdev.file(null, base.toString())).readOnly(true));
        assertThat(readOnly("base")).isTrue();
        qmp.block().blockdevReopen(Blockdev.qcow2("base", Blockdev.file(null, base.toString())));
        assertThat(readOnly("base")).isFalse();
        // QEMU looks a child reference up before it compares the driver
        assertThatThrownBy(() -> qmp.block().blockdevReopen(Blockdev.of("raw", "base").set("file", "x")))
                .isInstanceOfSatisfying(QmpException.class,
                        e -> assertThat(e.desc()).isEqualTo("Cannot find device='' nor node-name='x'"));
        assertThatThrownBy(() -> qmp.block().blockdevReopen(Blockdev.raw("base", Blockdev.file(null,
                base.toString())))).isInstanceOfSatisfying(QmpException.class,
                        e -> assertThat(e.desc()).isEqualTo("Cannot change the option 'driver'"));

        // an export keeps the overlay snapshot-sync opens (QEMU drops an overlay nobody uses)
        qmp.exports().nbdServerStartUnix(dir.resolve("nbd.sock").toString());
        qmp.exports().blockExportAdd("e0", "base", "base", true);
        Path ov = dir.resolve("ov.qcow2");
        qmp.block().blockdevSnapshotSync(BlockdevSnapshotSync.ofNode("base", ov.toString()).snapshotNodeName("ov"));
        assertThat(readOnly("base")).isTrue();
        assertThat(readOnly("ov")).isFalse();
        qmp.block().changeBackingFile("ov", "ov", "renamed.qcow2");
        StringBuilder info = new StringBuilder();
        assertThat(TestTools.run(List.of("qemu-img", "info", "-U", ov.toString()), info)).isZero();
        assertThat(info.toString()).contains("backing file: renamed.qcow2");

        Path ov2 = dir.resolve("ov2.qcow2");
        assertThat(TestTools.run(List.of("qemu-img", "create", "-q", "-f", "qcow2", ov2.toString(), "1M"),
                new StringBuilder())).isZero();
        qmp.block().blockdevAdd(Blockdev.qcow2("ov2", Blockdev.file(null, ov2.toString())).set("backing",
                com.fasterxml.jackson.databind.node.NullNode.getInstance()));
        qmp.block().blockdevSnapshot("ov", "ov2");
        assertThat(readOnly("ov")).isTrue();
    }

    private boolean readOnly(String node) {
        return qmp.block().queryNamedBlockNodes().stream().filter(n -> n.nodeName().equals(node)).findFirst()
                .orElseThrow().readOnly();
    }

    @Test
    void exportWithBitmapAndAllocationDepthHoldsTheBitmapBusy() throws Exception {
        assumeTrue(peer.supports("block-export-add") && peer.supports("block-dirty-bitmap-add"), "no bitmaps yet");
        Path extra = TestTools.patternedRaw(dir.resolve("bm.img"), 1 << 20);
        qmp.block().blockdevAdd(Blockdev.raw("bmnode", Blockdev.file("bmnode-file", extra.toString())));
        qmp.bitmaps().add(BitmapAdd.of("bmnode", "bm").disabled(true));
        Path nbd = dir.resolve("nbd-bm.sock");
        qmp.exports().nbdServerStartUnix(nbd.toString());
        qmp.exports().blockExportAdd("bmexp", "bmnode", "bmexp", false, List.of(BitmapRef.local("bm")), true);
        assertThat(qmp.bitmaps().of("bmnode")).extracting(BitmapInfo::busy).containsExactly(true);
        if (TestTools.onPath("nbdinfo")) {
            StringBuilder out = new StringBuilder();
            assertThat(TestTools.run(List.of("nbdinfo", "--list", "--content", "nbd+unix://?socket=" + nbd), out))
                    .isZero();
            assertThat(out.toString()).contains("qemu:allocation-depth", "qemu:dirty-bitmap:bm");
        }
        qmp.exports().blockExportDel("bmexp", false);
        waitFor(() -> qmp.exports().queryBlockExports().isEmpty());
        assertThat(qmp.bitmaps().of("bmnode")).extracting(BitmapInfo::busy).containsExactly(false);
        qmp.bitmaps().remove("bmnode", "bm");
        qmp.exports().nbdServerStop();
        qmp.block().blockdevDel("bmnode");
    }

    @Test
    void bitmapCommandsRoundTripAndShowInBothQueries() throws Exception {
        assumeTrue(peer.supports("block-dirty-bitmap-add"), "no dirty bitmaps yet");
        BitmapCommands b = qmp.bitmaps();
        b.add("drive0", "b0");
        b.add(BitmapAdd.of("drive0", "b1").granularity(512).disabled(true));
        assertThat(b.of("drive0")).containsExactly(
                new BitmapInfo("b1", false, false, false, 512, 0, false),
                new BitmapInfo("b0", true, false, false, 65536, 0, false));
        BlockInfo drive = qmp.block().queryBlock().stream().filter(x -> x.device().equals("drive0")).findFirst()
                .orElseThrow();
        assertThat(drive.dirtyBitmaps()).isEqualTo(b.of("drive0"));
        assertThat(b.list()).containsEntry(drive.nodeName(), drive.dirtyBitmaps());
        assertThat(b.of(drive.nodeName())).isEqualTo(drive.dirtyBitmaps());
        if (TestTools.onPath("qemu-io") && peer.supports("nbd-server-add")) {
            Path nbd = dir.resolve("bm-nbd.sock");
            qmp.exports().nbdServerStartUnix(nbd.toString());
            qmp.exports().nbdServerAdd("drive0", "d0", true);
            assertThat(TestTools.run(List.of("qemu-io", "-f", "raw", "-c", "write 65536 4096",
                    "nbd+unix:///d0?socket=" + nbd), new StringBuilder())).isZero();
            qmp.exports().nbdServerStop();
            assertThat(b.of("drive0").get(1).count()).isEqualTo(65536);
            assertThat(b.of("drive0").get(0).count()).as("disabled").isZero();
        }
        b.enable("drive0", "b1");
        b.disable("drive0", "b0");
        b.merge("drive0", "b1", BitmapRef.local("b0"), BitmapRef.on(drive.nodeName(), "b0"));
        assertThat(b.of("drive0").get(0).count()).isEqualTo(b.of("drive0").get(1).count());
        assertThat(b.sha256("drive0", "b0")).hasSize(64);
        b.clear("drive0", "b1");
        assertThat(b.sha256("drive0", "b1"))
                .isEqualTo(b.sha256(drive.nodeName(), "b1")); // device and node name: the same bitmap
        assertThatThrownBy(() -> b.remove("drive0", "nob"))
                .isInstanceOfSatisfying(QmpException.class, e -> {
                    assertThat(e.errorClass()).isEqualTo(ErrorClass.GENERIC_ERROR);
                    assertThat(e.desc()).isEqualTo("Dirty bitmap 'nob' not found");
                });
        b.remove("drive0", "b0");
        b.remove("drive0", "b1");
        assertThat(b.of("drive0")).isEmpty();
        assertThat(b.list()).isEmpty();
        assertThatThrownBy(() -> b.of("nosuch")).isInstanceOf(IllegalArgumentException.class);
    }

    @Test
    void genericJobVerbsAndQueryJobs() throws Exception {
        assumeJobs();
        Job job = qmp.jobs().driveBackup(DriveBackup.of("drive0", dir.resolve("g.img").toString())
                .sync(MirrorSyncMode.FULL).format("raw").jobId("g1").speed(256 << 10));
        qmp.jobs().jobPause("g1");
        waitFor(() -> qmp.jobs().queryJobs().stream().anyMatch(j -> j.id().equals("g1")
                && j.status() == JobStatus.PAUSED));
        JobInfo info = qmp.jobs().queryJobs().stream().filter(j -> j.id().equals("g1")).findFirst().orElseThrow();
        assertThat(info.type()).isEqualTo(JobType.BACKUP);
        assertThat(info.totalProgress()).isEqualTo(IMAGE_SIZE);
        waitFor(() -> job.progress().paused());
        qmp.jobs().jobResume("g1");
        waitFor(() -> !job.progress().paused());
        qmp.jobs().jobCancel("g1");
        assertThat(job.awaitCompletion(WAIT).outcome()).isEqualTo(JobResult.Outcome.CANCELLED);
        assertThatThrownBy(() -> qmp.jobs().jobDismiss("g1"))
                .isInstanceOfSatisfying(QmpException.class, e -> assertThat(e.desc()).isEqualTo("Job not found"));
    }

    @Test
    void badArgumentIsGenericError() {
        assumeJobs();
        assertThatThrownBy(() -> qmp.execute("drive-backup",
                java.util.Map.of("device", "drive0", "target", dir.resolve("x.img").toString(), "sync", "bogus")))
                .isInstanceOfSatisfying(QmpException.class, e -> {
                    assertThat(e.errorClass()).isEqualTo(ErrorClass.GENERIC_ERROR);
                    assertThat(e.desc()).isEqualTo("Parameter 'sync' does not accept value 'bogus'");
                });
    }

    @Test
    void unknownBlockJobIsDeviceNotActive() {
        assumeTrue(peer.supports("block-job-pause"), "no block-job-pause yet");
        assertThatThrownBy(() -> qmp.jobs().blockJobPause("nosuch"))
                .isInstanceOfSatisfying(DeviceNotActiveException.class,
                        e -> assertThat(e.desc()).isEqualTo("Block job 'nosuch' not found"));
        assertThatThrownBy(() -> qmp.jobs().jobPause("nosuch"))
                .isInstanceOfSatisfying(QmpException.class,
                        e -> assertThat(e.errorClass()).isEqualTo(ErrorClass.GENERIC_ERROR));
    }

    @Test
    void unknownCommandIsCommandNotFound() {
        assertThatThrownBy(() -> qmp.execute("no-such-command", null))
                .isInstanceOf(CommandNotFoundException.class);
    }

    @Test
    void quitClosesTheConnection() throws Exception {
        try (EventStream events = qmp.events()) {
            qmp.quit();
            assertThat(events.await(QmpEvent.SHUTDOWN, WAIT)).isNotNull();
        }
        waitFor(() -> !qmp.isOpen());
        assertThatThrownBy(qmp::queryStatus).isInstanceOf(QmpConnectionException.class);
    }

    void assumeJobs() {
        assumeTrue(peer.supports("drive-backup"), "the peer has no drive-backup yet");
    }

    static void waitFor(java.util.function.BooleanSupplier cond) throws InterruptedException {
        long deadline = System.nanoTime() + WAIT.toNanos();
        while (!cond.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("condition not met within " + WAIT);
            }
            Thread.sleep(20);
        }
    }
}
