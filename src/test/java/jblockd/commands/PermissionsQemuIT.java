package jblockd.commands;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/**
 * Users of a node refused by QEMU's permission model and op blockers: the same exchange
 * against jblockd and, when installed, QEMU 7.2 ({@code qemu-system-x86_64 -M none}), with
 * QEMU's texts written out so the jblockd side is checked without QEMU too.
 */
class PermissionsQemuIT {
    @TempDir
    Path dir;

    /** One exchange on a fresh daemon: the error texts of the steps that must fail. */
    private interface Exchange {
        List<String> run(QmpTestClient c, Path images) throws Exception;
    }

    @Test
    void blockdevDelOfTheActiveNodeOfAnIntermediateCommitIsBusy() throws Exception {
        Exchange e = (c, images) -> {
            c.executeOk("blockdev-add", QmpTestClient.json("{\"driver\":\"qcow2\",\"node-name\":\"drv0\","
                    + "\"file\":{\"driver\":\"file\",\"filename\":\"" + images.resolve("top.qcow2") + "\"}}"));
            c.executeOk("block-commit", Map.of("job-id", "c1", "device", "drv0",
                    "top", images.resolve("mid.qcow2").toString(), "speed", 1));
            return List.of(c.executeError("blockdev-del", Map.of("node-name", "drv0")).get("desc").asText());
        };
        assertSameAsQemu(e, List.of("Node 'drv0' is busy: block device is in use by block job: commit"));
    }

    @Test
    void aBackingNodeCannotBeDeletedUnderItsOverlay() throws Exception {
        Exchange e = (c, images) -> {
            chainByReference(c, images);
            return List.of(c.executeError("blockdev-del", Map.of("node-name", "base")).get("desc").asText(),
                    c.executeError("blockdev-del", Map.of("node-name", "mid")).get("desc").asText());
        };
        assertSameAsQemu(e, List.of("Node 'base' is busy: node is used as backing hd of 'mid'",
                "Node 'mid' is busy: node is used as backing hd of 'drv0'"));
    }

    @Test
    void aNewParentNodeIsCheckedAgainstTheUsersOfTheNodeItReferences() throws Exception {
        Exchange e = (c, images) -> {
            c.executeOk("blockdev-add", QmpTestClient.json("{\"driver\":\"file\",\"node-name\":\"tf\","
                    + "\"filename\":\"" + images.resolve("t1.qcow2") + "\"}"));
            c.executeOk("blockdev-add", Map.of("driver", "qcow2", "node-name", "t1", "file", "tf"));
            List<String> errors = new ArrayList<>();
            errors.add(c.executeError("blockdev-add", Map.of("driver", "qcow2", "node-name", "t2", "file", "tf"))
                    .get("desc").asText());
            errors.add(c.executeError("blockdev-add", Map.of("driver", "qcow2", "node-name", "t3",
                    "read-only", true, "file", "tf")).get("desc").asText());
            // a raw node passes its (absent) users' needs through: nothing to conflict with
            c.executeOk("blockdev-add", Map.of("driver", "raw", "node-name", "t4", "file", "tf"));
            // the refused nodes were not left behind
            errors.add(c.executeError("blockdev-del", Map.of("node-name", "t2")).get("desc").asText());
            return errors;
        };
        assertSameAsQemu(e, List.of(
                "Permission conflict on node 'tf': permissions 'write, resize' are both required by node 't1'"
                        + " (uses node 'tf' as 'file' child) and unshared by node 't2' (uses node 'tf' as 'file'"
                        + " child).",
                "Permission conflict on node 'tf': permissions 'write, resize' are both required by node 't1'"
                        + " (uses node 'tf' as 'file' child) and unshared by node 't3' (uses node 'tf' as 'file'"
                        + " child).",
                "Failed to find node with node-name='t2'"));
    }

    @Test
    void streamIsRefusedWhileItsBaseOrAnIntermediateIsExportedWritable() throws Exception {
        Exchange e = (c, images) -> {
            chainByReference(c, images);
            c.executeOk("nbd-server-start", QmpTestClient.json("{\"addr\":{\"type\":\"unix\",\"data\":{\"path\":\""
                    + images.resolve("nbd.sock") + "\"}}}"));
            c.executeOk("block-export-add", Map.of("type", "nbd", "id", "e0", "node-name", "base", "writable", true));
            List<String> errors = new ArrayList<>();
            errors.add(c.executeError("block-stream", Map.of("job-id", "s1", "device", "drv0", "base-node", "base",
                    "speed", 1)).get("desc").asText());
            errors.add(c.executeError("block-stream", Map.of("job-id", "s3", "device", "mid", "speed", 1))
                    .get("desc").asText());
            c.executeOk("block-export-add", Map.of("type", "nbd", "id", "e1", "node-name", "mid", "writable", true));
            errors.add(c.executeError("block-stream", Map.of("job-id", "s4", "device", "drv0", "base-node", "base",
                    "speed", 1)).get("desc").asText());
            return errors;
        };
        assertSameAsQemu(e, List.of(
                "Permission conflict on node 'base': permissions 'write' are both required by an unnamed block device"
                        + " (uses node 'base' as 'root' child) and unshared by node 'mid' (uses node 'base' as"
                        + " 'backing' child).",
                "Permission conflict on node 'base': permissions 'write' are both required by an unnamed block device"
                        + " (uses node 'base' as 'root' child) and unshared by stream job 's3' (uses node 'base' as"
                        + " 'intermediate node' child).",
                "Permission conflict on node 'mid': permissions 'write' are both required by an unnamed block device"
                        + " (uses node 'mid' as 'root' child) and unshared by stream job 's4' (uses node 'mid' as"
                        + " 'intermediate node' child)."));
    }

    /**
     * An intermediate commit's layers are not a consistent image while they empty into base:
     * QEMU's commit_top lets the overlay read on, the job refuses consistent read to new users
     * (mid itself, and mid's file through mid's own permissions); an export of mid made before
     * the commit moved onto commit_top and keeps reading. The base is written by the job only.
     */
    @Test
    void theLayersOfAnIntermediateCommitCannotBeExportedAnew() throws Exception {
        Exchange e = (c, images) -> {
            c.executeOk("blockdev-add", QmpTestClient.json("{\"driver\":\"qcow2\",\"node-name\":\"drv0\","
                    + "\"file\":{\"driver\":\"file\",\"filename\":\"" + images.resolve("top.qcow2") + "\"},"
                    + "\"backing\":{\"driver\":\"qcow2\",\"node-name\":\"mid\",\"file\":{\"driver\":\"file\","
                    + "\"node-name\":\"midf\",\"filename\":\"" + images.resolve("mid.qcow2") + "\"},"
                    + "\"backing\":{\"driver\":\"qcow2\",\"node-name\":\"base\",\"file\":{\"driver\":\"file\","
                    + "\"filename\":\"" + images.resolve("base.qcow2") + "\"}}}}"));
            c.executeOk("nbd-server-start", QmpTestClient.json("{\"addr\":{\"type\":\"unix\",\"data\":{\"path\":\""
                    + images.resolve("nbd.sock") + "\"}}}"));
            c.executeOk("block-export-add", Map.of("type", "nbd", "id", "e0", "node-name", "mid", "name", "early"));
            c.executeOk("block-commit", Map.of("job-id", "c1", "device", "drv0", "top-node", "mid",
                    "base-node", "base", "speed", 1));
            List<String> errors = new ArrayList<>();
            errors.add(c.executeError("block-export-add", Map.of("type", "nbd", "id", "e1", "node-name", "mid"))
                    .get("desc").asText());
            errors.add(c.executeError("block-export-add", Map.of("type", "nbd", "id", "e2", "node-name", "midf"))
                    .get("desc").asText());
            errors.add(c.executeError("block-export-add", Map.of("type", "nbd", "id", "e3", "node-name", "base",
                    "writable", true)).get("desc").asText());
            return errors;
        };
        assertSameAsQemu(e, List.of(
                "Permission conflict on node 'mid': permissions 'consistent read' are both required by an unnamed"
                        + " block device (uses node 'mid' as 'root' child) and unshared by commit job 'c1' (uses node"
                        + " 'mid' as 'intermediate node' child).",
                "Permission conflict on node 'midf': permissions 'consistent read' are both required by an unnamed"
                        + " block device (uses node 'midf' as 'root' child) and unshared by node 'mid' (uses node"
                        + " 'midf' as 'file' child).",
                "Permission conflict on node 'base': permissions 'write' are both required by an unnamed block device"
                        + " (uses node 'base' as 'root' child) and unshared by an unnamed block device (uses node"
                        + " 'base' as 'root' child)."));
    }

    @Test
    void aMirrorTargetCannotBeExportedAndIsInUse() throws Exception {
        Exchange e = (c, images) -> {
            c.executeOk("blockdev-add", QmpTestClient.json("{\"driver\":\"qcow2\",\"node-name\":\"drv0\","
                    + "\"file\":{\"driver\":\"file\",\"filename\":\"" + images.resolve("top.qcow2") + "\"}}"));
            c.executeOk("blockdev-add", QmpTestClient.json("{\"driver\":\"qcow2\",\"node-name\":\"t1\","
                    + "\"file\":{\"driver\":\"file\",\"filename\":\"" + images.resolve("t1.qcow2") + "\"}}"));
            c.executeOk("blockdev-mirror", Map.of("job-id", "m1", "device", "drv0", "target", "t1", "sync", "full",
                    "speed", 1));
            c.executeOk("nbd-server-start", QmpTestClient.json("{\"addr\":{\"type\":\"unix\",\"data\":{\"path\":\""
                    + images.resolve("nbd.sock") + "\"}}}"));
            return List.of(
                    c.executeError("blockdev-del", Map.of("node-name", "t1")).get("desc").asText(),
                    c.executeError("block-export-add", Map.of("type", "nbd", "id", "e0", "node-name", "t1"))
                            .get("desc").asText());
        };
        assertSameAsQemu(e, List.of("Node t1 is in use",
                "Permission conflict on node 't1': permissions 'consistent read' are both required by an unnamed"
                        + " block device (uses node 't1' as 'root' child) and unshared by an unnamed block device"
                        + " (uses node 't1' as 'root' child)."));
    }

    private static void chainByReference(QmpTestClient c, Path images) throws IOException {
        c.executeOk("blockdev-add", QmpTestClient.json("{\"driver\":\"qcow2\",\"node-name\":\"base\","
                + "\"file\":{\"driver\":\"file\",\"filename\":\"" + images.resolve("base.qcow2") + "\"}}"));
        c.executeOk("blockdev-add", QmpTestClient.json("{\"driver\":\"qcow2\",\"node-name\":\"mid\",\"backing\":\"base\","
                + "\"file\":{\"driver\":\"file\",\"filename\":\"" + images.resolve("mid.qcow2") + "\"}}"));
        c.executeOk("blockdev-add", QmpTestClient.json("{\"driver\":\"qcow2\",\"node-name\":\"drv0\",\"backing\":\"mid\","
                + "\"file\":{\"driver\":\"file\",\"filename\":\"" + images.resolve("top.qcow2") + "\"}}"));
    }

    /** Runs {@code e} on jblockd (must answer {@code expected}) and on QEMU when installed (the same). */
    private void assertSameAsQemu(Exchange e, List<String> expected) throws Exception {
        Path jImages = images("j");
        try (DaemonProcess d = DaemonProcess.start(Files.createDirectories(dir.resolve("jd")));
             QmpTestClient c = d.connect()) {
            assertThat(e.run(c, jImages)).as("jblockd").containsExactlyElementsOf(expected);
        }
        if (!onPath("qemu-system-x86_64")) {
            return;
        }
        Path qImages = images("q");
        Path sock = dir.resolve("qemu.sock");
        Process qemu = new ProcessBuilder("qemu-system-x86_64", "-M", "none", "-nodefaults", "-display", "none",
                "-qmp", "unix:" + sock + ",server=on,wait=off").redirectErrorStream(true)
                .redirectOutput(dir.resolve("qemu.log").toFile()).start();
        try {
            while (!Files.exists(sock) && qemu.isAlive()) {
                Thread.onSpinWait();
            }
            try (QmpTestClient q = connectWhenListening(sock)) {
                assertThat(e.run(q, qImages)).as("QEMU").containsExactlyElementsOf(expected);
            }
        } finally {
            qemu.destroy();
            qemu.waitFor(10, TimeUnit.SECONDS);
        }
    }

    /** QEMU creates its socket file before it listens on it: retry a refused connect for a while. */
    private static QmpTestClient connectWhenListening(Path sock) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (true) {
            try {
                return QmpTestClient.connectUnix(sock);
            } catch (java.net.ConnectException e) {
                if (System.nanoTime() > deadline) {
                    throw e;
                }
                Thread.sleep(20); // polling QEMU's start-up, not synchronising with jblockd
            }
        }
    }

    /** base (1 MiB of data) <- mid (1 MiB) <- top, each 8 MiB, and an empty mirror target. */
    private Path images(String name) throws Exception {
        Path d = Files.createDirectories(dir.resolve(name));
        run("qemu-img", "create", "-q", "-f", "qcow2", d.resolve("base.qcow2").toString(), "8M");
        run("qemu-io", "-c", "write -P 0x11 0 1M", d.resolve("base.qcow2").toString());
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", d.resolve("base.qcow2").toString(), "-F", "qcow2",
                d.resolve("mid.qcow2").toString());
        run("qemu-io", "-c", "write -P 0x22 1M 1M", d.resolve("mid.qcow2").toString());
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", d.resolve("mid.qcow2").toString(), "-F", "qcow2",
                d.resolve("top.qcow2").toString());
        run("qemu-img", "create", "-q", "-f", "qcow2", d.resolve("t1.qcow2").toString(), "8M");
        return d;
    }

    private static void run(String... cmd) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        assertThat(p.waitFor()).as(String.join(" ", cmd) + ": " + out).isZero();
    }

    private static boolean onPath(String tool) {
        for (String p : System.getenv("PATH").split(":")) {
            if (Files.isExecutable(Path.of(p, tool))) {
                return true;
            }
        }
        return false;
    }
}
