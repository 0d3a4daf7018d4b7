package jblockd.client;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Path;
import java.util.List;
import jblockd.qapi.ActionCompletionMode;
import jblockd.qapi.ErrorClass;
import jblockd.qapi.JobStatus;
import jblockd.qapi.MirrorSyncMode;
import org.junit.jupiter.api.Test;

/** The client contract against jblockd itself, plus jblockd's seed rules. */
class QmpClientJblockdIT extends QmpClientContract {
    @Override
    QmpPeer startPeer(Path dir, Path image) throws Exception {
        return JblockdPeer.start(dir, image);
    }

    @Test
    void driveBackupOfAnUnknownDeviceIsDeviceNotFound() {
        assumeJobs();
        // seed 004: an unknown device is DeviceNotFound (QEMU 7.2 says GenericError)
        assertThatThrownBy(() -> qmp.jobs().driveBackup(DriveBackup.of("nosuch", dir.resolve("x.img").toString())))
                .isInstanceOfSatisfying(DeviceNotFoundException.class, e -> {
                    assertThat(e.errorClass()).isEqualTo(ErrorClass.DEVICE_NOT_FOUND);
                    assertThat(e.command()).isEqualTo("drive-backup");
                });
    }

    @Test
    void aGroupedTransactionOfTwoBackupsGivesTwoJobsThatEndTogether() throws Exception {
        assumeJobs();
        Path second = TestTools.patternedRaw(dir.resolve("second.img"), IMAGE_SIZE);
        qmp.block().blockdevAdd(Blockdev.raw("src1", Blockdev.file("src1-file", second.toString())));
        Path t0 = dir.resolve("t0.img");
        Path t1 = dir.resolve("t1.img");
        List<Job> jobs = qmp.jobs().transaction(Transaction.of()
                .driveBackup(DriveBackup.of("drive0", t0.toString()).sync(MirrorSyncMode.FULL).format("raw"))
                .driveBackup(DriveBackup.of("src1", t1.toString()).jobId("b1").sync(MirrorSyncMode.FULL)
                        .format("raw").speed(64 << 10))
                .completionMode(ActionCompletionMode.GROUPED));
        // no job-id: the drive's name; a node without a drive needs one (jobs.md §8)
        assertThat(jobs).extracting(Job::id).containsExactly("drive0", "b1");
        // drive0's job is done long before b1's, but waits for it
        waitFor(() -> jobs.get(0).progress().status() == JobStatus.WAITING);
        jobs.get(1).cancel();
        assertThat(jobs.get(1).awaitCompletion(WAIT).outcome()).isEqualTo(JobResult.Outcome.CANCELLED);
        assertThat(jobs.get(0).awaitCompletion(WAIT).outcome()).isEqualTo(JobResult.Outcome.CANCELLED);
        assertThat(qmp.jobs().queryBlockJobs()).isEmpty();
    }

    @Test
    void connectsOverTcpToo() throws Exception {
        jblockd.daemon.Daemon d = jblockd.daemon.Daemon.builder().qmp("tcp:127.0.0.1:0").build();
        d.start();
        try (QmpClient tcp = QmpClient.connect("tcp:127.0.0.1:" + d.qmpServers().get(0).port())) {
            assertThat(tcp.queryVersion().major()).isEqualTo(7);
            assertThat(tcp.peer()).startsWith("127.0.0.1:");
        } finally {
            d.close();
        }
    }

    @Test
    void severalClientsAtOnceEachGetEveryEvent() throws Exception {
        assumeTrue(peer.supports("stop"), "no stop/cont yet");
        try (QmpClient second = QmpClient.connectUnix(peer.socket());
             EventStream a = qmp.events(); EventStream b = second.events()) {
            second.stop();
            assertThat(a.await(QmpEvent.STOP, WAIT)).isNotNull();
            assertThat(b.await(QmpEvent.STOP, WAIT)).isNotNull();
            qmp.cont();
            assertThat(a.await(QmpEvent.RESUME, WAIT)).isNotNull();
            assertThat(b.await(QmpEvent.RESUME, WAIT)).isNotNull();
        }
    }
}
