package jblockd.testsupport;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;

/**
 * A one-host Ceph cluster for a test class (bin/test-ceph: one monitor, one memstore OSD,
 * cephx, 127.0.0.1 only), torn down by pid at {@link #close}. Tests skip, with the reason, where
 * the Ceph packages or librbd are missing; CI installs them. Image names should be unique per
 * test (a killed client keeps its exclusive lock for a few seconds).
 */
public final class CephCluster implements AutoCloseable {
    private final Path dir;
    private final Path conf;
    private final String key;
    private final String mon;

    private CephCluster(Path dir, Map<String, String> facts) {
        this.dir = dir;
        this.conf = Path.of(facts.get("conf"));
        this.key = facts.get("key");
        this.mon = facts.get("mon");
    }

    /** Starts a cluster in a new short directory under /tmp (UNIX socket paths are short). */
    public static CephCluster start() throws IOException, InterruptedException {
        assumeTrue(ExternalTools.present("ceph-mon") && ExternalTools.present("ceph-osd")
                && ExternalTools.present("rbd"), "Ceph is not installed (ceph-mon ceph-osd ceph-common)");
        assumeTrue(Files.exists(Path.of("/usr/lib/x86_64-linux-gnu/librbd.so.1")), "librbd1 is not installed");
        Path dir = Files.createTempDirectory(Path.of("/tmp"), "ceph");
        Path script = Path.of("bin/test-ceph").toAbsolutePath();
        ExternalTools.Result r = ExternalTools.run(script.toString(), "start", dir.toString());
        if (r.exit() != 0) {
            ExternalTools.run(script.toString(), "stop", dir.toString());
            throw new IOException("bin/test-ceph start failed (" + r.exit() + "): " + r.out());
        }
        Map<String, String> facts = new HashMap<>();
        for (String line : r.out().split("\n")) {
            int eq = line.indexOf('=');
            if (eq > 0) {
                facts.put(line.substring(0, eq), line.substring(eq + 1).strip());
            }
        }
        return new CephCluster(dir, facts);
    }

    public Path conf() {
        return conf;
    }

    /** client.admin's key, base64 as Ceph prints it. */
    public String adminKey() {
        return key;
    }

    /** The monitor's msgr2 address, {@code 127.0.0.1:PORT}. */
    public String monitor() {
        return mon;
    }

    /** {@code rbd:rbd/IMAGE:conf=...:id=admin}, the name QEMU's tools take. */
    public String rbdName(String image) {
        return "rbd:rbd/" + image + ":conf=" + conf + ":id=admin";
    }

    /** blockdev-add arguments of an rbd node over pool rbd's {@code image}, as client.admin with this conf. */
    public Map<String, Object> blockdevAdd(String node, String image) {
        return blockdevAdd(node, image, conf);
    }

    /** The same with another conf file (one with extra settings for a test). */
    public static Map<String, Object> blockdevAdd(String node, String image, Path confFile) {
        Map<String, Object> m = new java.util.LinkedHashMap<>();
        m.put("driver", "rbd");
        m.put("node-name", node);
        m.put("pool", "rbd");
        m.put("image", image);
        m.put("conf", confFile.toString());
        m.put("user", "admin");
        return m;
    }

    /** {@code rbd create} of a new image of {@code bytes} in pool rbd. */
    public void createImage(String image, long bytes) throws IOException, InterruptedException {
        rbd("create", "--size", bytes + "B", "rbd/" + image);
    }

    /** Runs the rbd CLI against this cluster; fails the test on a non-zero exit. */
    public String rbd(String... args) throws IOException, InterruptedException {
        String[] cmd = new String[args.length + 5];
        cmd[0] = "timeout";
        cmd[1] = "60";
        cmd[2] = "rbd";
        cmd[3] = "--conf";
        cmd[4] = conf.toString();
        System.arraycopy(args, 0, cmd, 5, args.length);
        return ExternalTools.ok(cmd);
    }

    /**
     * bin/test-ceph restart-osd: the OSD stops cleanly (its memstore data saved), stays down
     * {@code downSeconds}, starts again; returns once it is up in the osdmap.
     */
    public void restartOsd(int downSeconds) throws IOException, InterruptedException {
        ExternalTools.Result r = ExternalTools.run(Path.of("bin/test-ceph").toAbsolutePath().toString(),
                "restart-osd", dir.toString(), String.valueOf(downSeconds));
        if (r.exit() != 0) {
            throw new IOException("bin/test-ceph restart-osd failed (" + r.exit() + "): " + r.out());
        }
    }

    /** A copy of the cluster's conf file with {@code extraLines} added to [global], next to it. */
    public Path confWith(String name, String... extraLines) throws IOException {
        String text = Files.readString(conf).replaceFirst("\\[global\\]\n",
                "[global]\n" + String.join("\n", extraLines) + "\n");
        Path p = dir.resolve(name);
        Files.writeString(p, text);
        return p;
    }

    @Override
    public void close() throws IOException, InterruptedException {
        ExternalTools.run(Path.of("bin/test-ceph").toAbsolutePath().toString(), "stop", dir.toString());
    }
}
