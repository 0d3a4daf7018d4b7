package jblockd.job.mirror;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.QmpTestClient;

/**
 * block-stream, intermediate and active block-commit on the same qcow2 chain (base 0-4M, mid
 * 4-8M, top 8-12M of 16 MiB) against QEMU 7.2 ({@code -M none}, {@code if=none} drive) and
 * jblockd: same event sequence, same len/offset in the end events, same resulting chain
 * (backing file names and depth of every extent in qemu-img map).
 */
class StreamCommitVsQemuIT {
    private static final long MIB = 1 << 20;
    private static final Duration T = Duration.ofSeconds(30);

    @TempDir
    Path dir;

    @BeforeEach
    void tools() {
        Tools.assumeTools("qemu-system-x86_64", "qemu-img", "qemu-io");
    }

    private Path chain(String name) throws Exception {
        Path d = Files.createDirectories(dir.resolve(name));
        Path base = d.resolve("base.qcow2");
        Path mid = d.resolve("mid.qcow2");
        Path top = d.resolve("top.qcow2");
        Tools.ok("qemu-img", "create", "-q", "-f", "qcow2", base.toString(), "16M");
        Tools.ok("qemu-img", "create", "-q", "-f", "qcow2", "-b", base.toString(), "-F", "qcow2", mid.toString());
        Tools.ok("qemu-img", "create", "-q", "-f", "qcow2", "-b", mid.toString(), "-F", "qcow2", top.toString());
        Tools.write(base, "qcow2", 0x11, 0, 4 * MIB);
        Tools.write(mid, "qcow2", 0x22, 4 * MIB, 4 * MIB);
        Tools.write(top, "qcow2", 0x33, 8 * MIB, 4 * MIB);
        return d;
    }

    private interface Run {
        List<String> run(QmpTestClient c, Path d) throws Exception;
    }

    private static String show(JsonNode e) {
        String name = e.path("event").asText();
        if (name.equals("JOB_STATUS_CHANGE")) {
            return "J(" + e.path("data").path("status").asText() + ")";
        }
        if (name.startsWith("BLOCK_JOB_") && !name.equals("BLOCK_JOB_PENDING")) {
            JsonNode data = e.path("data");
            return name + "{type=" + data.path("type").asText() + ",len=" + data.path("len").asLong() + ",offset="
                    + data.path("offset").asLong() + ",members=" + QmpTestClient.memberNames(data) + "}";
        }
        return name;
    }

    static List<String> until(QmpTestClient c, List<String> out, String last) throws Exception {
        while (true) {
            JsonNode e = c.events().poll(T.toSeconds(), TimeUnit.SECONDS);
            assertThat(e).as("events so far " + out).isNotNull();
            String s = show(e);
            out.add(s);
            if (s.startsWith(last)) {
                return out;
            }
        }
    }

    /** The chain afterwards, with the directory replaced by DIR. */
    private static List<String> result(Path d) throws Exception {
        List<String> out = new ArrayList<>();
        for (String img : List.of("base.qcow2", "top.qcow2")) {
            Tools.ok("qemu-img", "check", d.resolve(img).toString());
            String info = Tools.ok("qemu-img", "info", "--backing-chain", d.resolve(img).toString());
            info.lines().filter(l -> l.startsWith("backing file") || l.startsWith("image:"))
                    .forEach(l -> out.add(img + ": " + l.replace(d.toString(), "DIR")));
            // guest-visible layout only: runs of equal depth/data are merged (the host offsets of
            // clusters depend on the order of parallel copies, which differs from QEMU's)
            long runStart = 0;
            long runEnd = 0;
            String runKind = null;
            for (JsonNode e : QmpTestClient.json(Tools.ok("qemu-img", "map", "--output=json", d.resolve(img).toString()))) {
                String kind = " depth " + e.path("depth").asInt() + " data " + e.path("data").asBoolean();
                if (kind.equals(runKind) && e.path("start").asLong() == runEnd) {
                    runEnd += e.path("length").asLong();
                    continue;
                }
                if (runKind != null) {
                    out.add(img + " map " + runStart + "+" + (runEnd - runStart) + runKind);
                }
                runKind = kind;
                runStart = e.path("start").asLong();
                runEnd = runStart + e.path("length").asLong();
            }
            out.add(img + " map " + runStart + "+" + (runEnd - runStart) + runKind);
        }
        return out;
    }

    private void compare(Run scenario) throws Exception {
        Path qd = chain("qemu");
        List<String> qev;
        Path sock = qd.resolve("qmp.sock");
        Process p = new ProcessBuilder("qemu-system-x86_64", "-M", "none", "-nodefaults", "-display", "none",
                "-qmp", "unix:" + sock + ",server=on,wait=off",
                "-drive", "if=none,id=drive0,file=" + qd.resolve("top.qcow2") + ",format=qcow2")
                .redirectErrorStream(true).redirectOutput(qd.resolve("qemu.log").toFile()).start();
        try {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (!Files.exists(sock) && System.nanoTime() < deadline) {
                Thread.sleep(20);
            }
            try (QmpTestClient c = QmpTestClient.connectUnix(sock)) {
                qev = scenario.run(c, qd);
                c.executeOk("quit");
            }
            p.waitFor(20, TimeUnit.SECONDS);
        } finally {
            p.destroyForcibly();
        }
        Path jd = chain("jblockd");
        List<String> jev;
        try (DaemonProcess d = DaemonProcess.start(jd, "--drive", "id=drive0,file=" + jd.resolve("top.qcow2")
                + ",format=qcow2"); QmpTestClient c = d.connect()) {
            jev = scenario.run(c, jd);
            c.executeOk("quit");
        }
        assertThat(jev).isEqualTo(qev);
        assertThat(result(jd)).isEqualTo(result(qd));
    }

    @Test
    void streamOntoBaseMatchesQemu() throws Exception {
        compare((c, d) -> {
            List<String> ev = new ArrayList<>();
            c.executeOk("block-stream", Map.of("device", "drive0", "base", d.resolve("base.qcow2").toString()));
            return until(c, ev, "J(null)");
        });
    }

    @Test
    void intermediateCommitMatchesQemu() throws Exception {
        compare((c, d) -> {
            List<String> ev = new ArrayList<>();
            c.executeOk("block-commit", Map.of("device", "drive0", "top", d.resolve("mid.qcow2").toString()));
            return until(c, ev, "J(null)");
        });
    }

    @Test
    void activeCommitWithCompleteMatchesQemu() throws Exception {
        compare((c, d) -> {
            List<String> ev = new ArrayList<>();
            c.executeOk("block-commit", Map.of("device", "drive0"));
            until(c, ev, "BLOCK_JOB_READY");
            JsonNode job = c.executeOk("query-block-jobs").get(0);
            ev.add("query " + QmpTestClient.memberNames(job) + " len=" + job.path("len").asLong() + " status="
                    + job.path("status").asText());
            c.executeOk("block-job-complete", Map.of("device", "drive0"));
            ev.add("<complete>");
            until(c, ev, "J(null)");
            JsonNode blk = c.executeOk("query-block").get(0).path("inserted");
            ev.add("file=" + blk.path("file").asText().replace(d.toString(), "DIR") + " depth="
                    + blk.path("backing_file_depth").asInt());
            return ev;
        });
    }
}
