package jblockd.block.file;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QemuStorageDaemon;
import jblockd.testsupport.QmpTestClient;

/**
 * QEMU's image locks both ways: while jblockd holds an image read-write, qemu-img (without
 * -U) and qemu-io fail with QEMU's "Failed to get shared "write" lock", as they do while a
 * qemu-storage-daemon 7.2 holds it; jblockd refuses an image that QSD or another jblockd holds
 * with the text QSD gives for the same case; locking=off takes no locks; releasing the node
 * releases the image.
 */
class ImageLockingQemuIT {
    @TempDir
    Path tmp;
    private Path img;

    private static boolean have(String tool) {
        try {
            return new ProcessBuilder(tool, "--version").redirectErrorStream(true).start().waitFor() == 0;
        } catch (IOException | InterruptedException e) {
            return false;
        }
    }

    /** Exit code and combined output of a QEMU tool. */
    private record Run(int exit, String out) {
    }

    private static Run run(String... cmd) throws Exception {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        assertThat(p.waitFor(30, TimeUnit.SECONDS)).isTrue();
        return new Run(p.exitValue(), out);
    }

    @BeforeEach
    void image() throws Exception {
        assumeTrue(have("qemu-storage-daemon") && have("qemu-img") && have("qemu-io"), "QEMU 7.2 tools not installed");
        img = tmp.resolve("disk.qcow2");
        assertThat(run("qemu-img", "create", "-q", "-f", "qcow2", img.toString(), "1M").exit()).isZero();
    }

    private JsonNode add(QmpTestClient c, String node, String locking) throws IOException {
        return c.execute("blockdev-add", QmpTestClient.json("{\"driver\":\"qcow2\",\"node-name\":\"" + node
                + "\",\"file\":{\"driver\":\"file\",\"filename\":\"" + img + "\""
                + (locking == null ? "" : ",\"locking\":\"" + locking + "\"") + "}}"));
    }

    /** What the QEMU tools say about the image now (lock messages; paths are the same image). */
    private List<String> tools() throws Exception {
        List<String> out = new ArrayList<>();
        Run info = run("qemu-img", "info", img.toString());
        out.add("info " + info.exit() + " " + (info.exit() == 0 ? "" : info.out().strip()));
        out.add("info -U " + run("qemu-img", "info", "-U", img.toString()).exit());
        Run io = run("qemu-io", "-c", "read 0 512", img.toString());
        out.add("qemu-io " + io.exit() + " " + (io.exit() == 0 ? "" : io.out().strip()));
        return out;
    }

    @Test
    void qemuToolsAndDaemonsSeeJblockdsLocksAsQsds() throws Exception {
        // reference: a QSD holds the image; the tools and a second QSD try it
        List<String> qsdHeld;
        String qsdVsQsd;
        String jblockdVsQsd;
        QemuStorageDaemon q = QemuStorageDaemon.start(tmp.resolve("qsd"));
        try (QmpTestClient c = q.connect()) {
            assertThat(add(c, "d0", null).has("return")).isTrue();
            qsdHeld = tools();
            QemuStorageDaemon q2 = QemuStorageDaemon.start(tmp.resolve("qsd2"));
            try (QmpTestClient c2 = q2.connect()) {
                qsdVsQsd = add(c2, "d1", null).at("/error/desc").asText();
            } finally {
                q2.close();
            }
            try (DaemonProcess j = DaemonProcess.start(Files.createDirectories(tmp.resolve("jb-vs-qsd")));
                 QmpTestClient cj = j.connect()) {
                jblockdVsQsd = add(cj, "d1", null).at("/error/desc").asText();
                // the refused open left nothing behind
                assertThat(cj.executeOk("query-named-block-nodes")).isEmpty();
            }
        } finally {
            q.close();
        }
        assertThat(qsdVsQsd).isEqualTo("Failed to get \"write\" lock");
        assertThat(jblockdVsQsd).isEqualTo(qsdVsQsd);
        assertThat(String.join("\n", qsdHeld)).contains("Failed to get shared \"write\" lock");

        try (DaemonProcess j = DaemonProcess.start(Files.createDirectories(tmp.resolve("jb")));
             QmpTestClient c = j.connect()) {
            assertThat(add(c, "d0", null).has("return")).isTrue();
            assertThat(String.join("\n", tools())).isEqualTo(String.join("\n", qsdHeld));
            QemuStorageDaemon q2 = QemuStorageDaemon.start(tmp.resolve("qsd3"));
            try (QmpTestClient c2 = q2.connect()) {
                assertThat(add(c2, "d1", null).at("/error/desc").asText()).isEqualTo(qsdVsQsd);
            } finally {
                q2.close();
            }
            try (DaemonProcess j2 = DaemonProcess.start(Files.createDirectories(tmp.resolve("jb2")));
                 QmpTestClient c2 = j2.connect()) {
                assertThat(add(c2, "d1", null).at("/error/desc").asText()).isEqualTo(qsdVsQsd);
                // without locking the second daemon takes the image (as QEMU's locking=off)
                assertThat(add(c2, "d2", "off").has("return")).isTrue();
            }
            // releasing the node releases the image
            c.executeOk("blockdev-del", QmpTestClient.json("{\"node-name\":\"d0\"}"));
            assertThat(run("qemu-img", "info", img.toString()).exit()).isZero();
            // locking=off: the tools do not see jblockd
            assertThat(add(c, "d3", "off").has("return")).isTrue();
            assertThat(run("qemu-img", "info", img.toString()).exit()).isZero();
        }
    }
}
