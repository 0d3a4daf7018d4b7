package jblockd.client;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import jblockd.daemon.Daemon;

/**
 * jblockd itself as the QMP peer: a {@link Daemon} in this JVM (it costs no JVM start, which
 * matters on a shared CI machine) with a raw {@code drive0} and its QMP server on a real UNIX
 * socket, so clients and jblockctl processes talk to it exactly as to {@code bin/jblockd}.
 */
public final class JblockdPeer implements QmpPeer {
    private final Daemon daemon;
    private final Path socket;
    private final List<String> commands;

    private JblockdPeer(Daemon daemon, Path socket, List<String> commands) {
        this.daemon = daemon;
        this.socket = socket;
        this.commands = commands;
    }

    public static JblockdPeer start(Path dir, Path image) throws IOException {
        return start(dir, image, "raw");
    }

    public static JblockdPeer start(Path dir, Path image, String format) throws IOException {
        Path sock = dir.resolve("jblockd-qmp.sock");
        Daemon d = Daemon.builder().qmp("unix:" + sock)
                .drive("id=drive0,file=" + image.toString().replace(",", ",,") + ",format=" + format).build();
        try {
            d.start();
        } catch (Daemon.StartupException e) {
            throw new IOException("jblockd did not start: " + e.getMessage(), e);
        }
        try (QmpClient qmp = QmpClient.connectUnix(sock)) {
            return new JblockdPeer(d, sock, qmp.queryCommands());
        } catch (IOException | RuntimeException e) {
            d.close();
            throw e;
        }
    }

    @Override
    public Path socket() {
        return socket;
    }

    @Override
    public boolean isQemu() {
        return false;
    }

    @Override
    public boolean supports(String command) {
        return commands.contains(command);
    }

    @Override
    public void close() {
        daemon.close();
    }
}
