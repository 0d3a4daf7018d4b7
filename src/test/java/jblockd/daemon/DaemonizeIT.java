package jblockd.daemon;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/** --daemonize as qemu-storage-daemon: the parent exits 0 once the sockets listen, the pidfile names the daemon. */
class DaemonizeIT {
    @TempDir
    Path tmp;

    @Test
    void parentExitsOnceTheSocketsListenAndThePidfileNamesTheDaemon() throws Exception {
        Path sock = tmp.resolve("qmp.sock");
        Path pidfile = tmp.resolve("d.pid");
        Path img = tmp.resolve("d.raw");
        Files.write(img, new byte[1 << 20]);
        try (DaemonProcess parent = DaemonProcess.startRaw(tmp, "--daemonize", "--pidfile", pidfile.toString(),
                "--blockdev", "driver=file,filename=" + img + ",node-name=f0,aio=threads",
                "--chardev", "socket,id=m,path=" + sock + ",server=on,wait=off", "--monitor", "chardev=m")) {
            assertThat(parent.waitFor(Duration.ofSeconds(30))).isZero();
            // listening already: no polling
            long pid = Long.parseLong(Files.readString(pidfile).trim());
            ProcessHandle daemon = ProcessHandle.of(pid).orElseThrow();
            assertThat(pid).isNotEqualTo(parent.pid());
            try (QmpTestClient c = QmpTestClient.connectUnix(sock)) {
                assertThat(c.executeOk("query-named-block-nodes").get(0).get("node-name").asText()).isEqualTo("f0");
                c.executeOk("quit");
            }
            assertThat(daemon.onExit().get(30, TimeUnit.SECONDS).isAlive()).isFalse();
            assertThat(pidfile).doesNotExist();
        }
    }

    @Test
    void aStartupErrorReachesTheParent() throws Exception {
        try (DaemonProcess parent = DaemonProcess.startRaw(tmp, "--daemonize",
                "--blockdev", "driver=file,filename=" + tmp.resolve("missing") + ",node-name=f0")) {
            assertThat(parent.waitFor(Duration.ofSeconds(30))).isEqualTo(1);
            assertThat(parent.stderr()).contains("missing");
        }
    }
}
