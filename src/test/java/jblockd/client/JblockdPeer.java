package jblockd.client;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import jblockd.testsupport.DaemonProcess;

/** jblockd itself as a process ({@code bin/jblockd}'s Main) with a raw {@code drive0}. */
public final class JblockdPeer implements QmpPeer {
    private final DaemonProcess daemon;
    private final List<String> commands;

    private JblockdPeer(DaemonProcess daemon, List<String> commands) {
        this.daemon = daemon;
        this.commands = commands;
    }

    public static JblockdPeer start(Path dir, Path image) throws IOException {
        return start(dir, image, "raw");
    }

    public static JblockdPeer start(Path dir, Path image, String format) throws IOException {
        DaemonProcess d = DaemonProcess.start(dir, "--drive", "id=drive0,file=" + image + ",format=" + format);
        try (QmpClient qmp = QmpClient.connectUnix(d.qmpSocket())) {
            return new JblockdPeer(d, qmp.queryCommands());
        } catch (IOException | RuntimeException e) {
            d.close();
            throw e;
        }
    }

    @Override
    public Path socket() {
        return daemon.qmpSocket();
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
