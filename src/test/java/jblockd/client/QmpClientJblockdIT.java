package jblockd.client;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Path;
import jblockd.qapi.ErrorClass;
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
