package jblockd.daemon;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Start-up errors in-process: the one line Main prints, and nothing left behind. */
class DaemonStartupTest {
    @TempDir
    Path dir;

    private void fails(String expectedLine, String... nameValue) throws Exception {
        Path sock = dir.resolve("s.sock");
        Path pid = dir.resolve("s.pid");
        Daemon.Builder b = Daemon.builder().qmp("unix:" + sock).pidfile(pid);
        for (int i = 0; i < nameValue.length; i += 2) {
            b.option(nameValue[i], nameValue[i + 1]);
        }
        Daemon d = b.build();
        assertThatThrownBy(d::start).isInstanceOfSatisfying(Daemon.StartupException.class,
                e -> assertThat(e.line()).isEqualTo(expectedLine));
        assertThat(sock).doesNotExist();
        assertThat(pid).doesNotExist();
        assertThat(d.graph().nodes()).isEmpty();
        assertThat(d.isClosed()).isTrue();
    }

    @Test
    void driveErrors() throws Exception {
        Path img = dir.resolve("d.raw");
        Files.write(img, new byte[65536]);
        fails("jblockd: --drive id=d0,file=" + img + ",rerror=enospc: 'enospc' invalid read error action",
                "drive", "id=d0,file=" + img + ",rerror=enospc");
        fails("jblockd: --drive id=d0,file=" + img + ",werror=auto: 'auto' invalid write error action",
                "drive", "id=d0,file=" + img + ",werror=auto");
        fails("jblockd: --drive id=d0,file=" + img + ",werror=bogus: 'bogus' invalid write error action",
                "drive", "id=d0,file=" + img + ",werror=bogus");
        fails("jblockd: --drive file=" + img + ": Parameter 'id' is missing", "drive", "file=" + img);
        fails("jblockd: --drive id=d0,file=" + img + ",bogus=1: Invalid parameter 'bogus'",
                "drive", "id=d0,file=" + img + ",bogus=1");
        fails("jblockd: --drive id=d0,file=" + img + ",cache=sometimes: invalid cache option",
                "drive", "id=d0,file=" + img + ",cache=sometimes");
        fails("jblockd: --drive id=d0,file=" + img + ",discard=sometimes: Invalid discard option",
                "drive", "id=d0,file=" + img + ",discard=sometimes");
        fails("jblockd: --drive id=d0,file=" + img + ",read-only=maybe: Parameter 'read-only' expects 'on' or 'off'",
                "drive", "id=d0,file=" + img + ",read-only=maybe");
        fails("jblockd: --drive id=d0,file=" + img + ",node-name=1x: Invalid node-name: '1x'",
                "drive", "id=d0,file=" + img + ",node-name=1x");
        fails("jblockd: --drive id=d0,file=" + img + ",format=raw: Duplicate ID 'd0' for drive",
                "drive", "id=d0,file=" + img + ",format=raw", "drive", "id=d0,file=" + img + ",format=raw");
    }

    @Test
    void blockdevAndSocketErrors() throws Exception {
        Path img = dir.resolve("b.raw");
        Files.write(img, new byte[4096]);
        fails("jblockd: --blockdev driver=file,node-name=f,filename=" + img + ",bogus=1: Parameter 'bogus' is unexpected",
                "blockdev", "driver=file,node-name=f,filename=" + img + ",bogus=1");
        fails("jblockd: --blockdev {\"driver\":\"file\",\"node-name\":\"f\"}: Parameter 'filename' is missing",
                "blockdev", "{\"driver\":\"file\",\"node-name\":\"f\"}");
        fails("jblockd: --blockdev driver=file,node-name=f,filename=" + img + ",read-only=2: "
                + "Parameter 'read-only' expects 'on' or 'off'",
                "blockdev", "driver=file,node-name=f,filename=" + img + ",read-only=2");
        fails("jblockd: --blockdev driver=file,filename: Expected '=' after parameter 'filename'",
                "blockdev", "driver=file,filename");
        fails("jblockd: --qmp bogus: expected unix:PATH or tcp:HOST:PORT, got 'bogus'", "qmp", "bogus");
        fails("jblockd: --monitor chardev=nope: chardev \"nope\" not found", "monitor", "chardev=nope");
        fails("jblockd: --chardev file,id=c: chardev backend 'file' is not supported (only socket)",
                "chardev", "file,id=c");
        Path notASocket = dir.resolve("plain");
        Files.writeString(notASocket, "x");
        fails("jblockd: --qmp unix:" + notASocket + ": Failed to bind socket to " + notASocket
                + ": Address already in use", "qmp", "unix:" + notASocket);
        assertThat(notASocket).exists();
    }

    @Test
    void tcpPortInUseIsAStartupError() throws Exception {
        try (java.net.ServerSocket taken = new java.net.ServerSocket(0, 1,
                java.net.InetAddress.getByName("127.0.0.1"))) {
            int port = taken.getLocalPort();
            Daemon d = Daemon.builder().qmp("tcp:127.0.0.1:" + port).build();
            assertThatThrownBy(d::start).isInstanceOfSatisfying(Daemon.StartupException.class,
                    e -> assertThat(e.line()).startsWith("jblockd: --qmp tcp:127.0.0.1:" + port + ": "));
        }
    }
}
