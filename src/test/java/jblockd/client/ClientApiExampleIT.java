package jblockd.client;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import jblockd.qapi.ErrorClass;
import jblockd.qapi.MirrorSyncMode;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The example of docs/client-api.md, verbatim but for the socket path and System.out, against jblockd. */
class ClientApiExampleIT {
    @TempDir
    Path dir;

    @Test
    void theDocumentedExampleRunsAndBacksUp() throws Exception {
        Path image = TestTools.patternedRaw(dir.resolve("disk.img"), 4L << 20);
        String backup = dir.resolve("backup.qcow2").toString();
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        PrintStream out = new PrintStream(buf, true, StandardCharsets.UTF_8);
        try (JblockdPeer peer = JblockdPeer.start(dir, image)) {
            Path socket = peer.socket();
            // ---- docs/client-api.md ----
            try (QmpClient qmp = QmpClient.connectUnix(socket)) {   // or connectTcp(host, port)
                out.println("server " + qmp.queryVersion() + ", state " + qmp.queryStatus().wire());

                Job job = qmp.jobs().driveBackup(DriveBackup.of("drive0", backup)
                        .format("qcow2").sync(MirrorSyncMode.FULL).speed(50L << 20));
                job.onProgress(p -> out.printf("%s %.1f%% %d/%d bytes, %.0f B/s, eta %s, %s%n",
                        p.id(), p.percent(), p.offset(), p.len(), p.rate(), p.eta(), p.status()));

                JobResult r = job.awaitCompletion(Duration.ofMinutes(10));
                switch (r.outcome()) {
                    case COMPLETED -> out.println("done: " + r.len() + " bytes");
                    case FAILED -> out.println("failed: " + r.error());
                    case CANCELLED -> out.println("cancelled at " + r.offset());
                }
            } catch (DeviceNotFoundException e) {             // error class DeviceNotFound
                out.println("no such device: " + e.desc());
            } catch (QmpException e) {                         // any other error reply
                out.println(e.wireClass() + ": " + e.desc() + (e.errorClass() == ErrorClass.GENERIC_ERROR ? "" : "!"));
            }
            // ---- end ----
        }
        String text = buf.toString(StandardCharsets.UTF_8);
        assertThat(text).contains("server 7.2.0 (jblockd ").contains(", state running")
                .contains("drive0 100.0% 4194304/4194304 bytes").contains("done: 4194304 bytes");
        assertThat(TestTools.qemuImgCompare(image, Path.of(backup))).isZero();
    }
}
