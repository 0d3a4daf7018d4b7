package jblockd.it;

import static jblockd.it.AcrossHosts.WAIT;
import static jblockd.it.AcrossHosts.assertIdentical;
import static jblockd.it.AcrossHosts.awaitOffset;
import static jblockd.it.AcrossHosts.awaitPaused;
import static jblockd.it.AcrossHosts.event;
import static jblockd.it.AcrossHosts.export;
import static jblockd.it.AcrossHosts.m;
import static jblockd.it.AcrossHosts.peer;
import static jblockd.it.AcrossHosts.raw;
import static jblockd.it.AcrossHosts.rawNode;
import static jblockd.it.AcrossHosts.sha256;
import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import jblockd.testsupport.DaemonProcess;
import jblockd.testsupport.ExternalTools;
import jblockd.testsupport.HostPair;
import jblockd.testsupport.NbdPeer;

/**
 * Faults between two hosts (issue 15, Verify): the remote daemon killed mid-mirror, the link
 * cut for less and for more than {@code reconnect-delay}. The mirror source is on host A, the
 * target jblockd on host B; where it is cheap, qemu-storage-daemon 7.2 runs the same mirror
 * from A into the same B in the same run, and the two must end the same way.
 */
class AcrossHostsFaultsIT {
    @TempDir
    Path dir;

    @BeforeEach
    void tools() {
        ExternalTools.assumeTools("qemu-img", "qemu-io", "qemu-storage-daemon", "sha256sum");
    }

    /** jblockd on B exporting {@code dst} as "e" from its command line: after a restart it serves at once. */
    private static NbdPeer target(HostPair hosts, Path dir, Path dst) throws Exception {
        return NbdPeer.jblockd(hosts.b(), dir, "--blockdev", "driver=raw,node-name=disk,file.driver=file,file.filename="
                + dst, "--export", "type=nbd,id=e,node-name=disk,name=e,writable=on");
    }

    private static void kill(NbdPeer p) throws Exception {
        Process proc = ((DaemonProcess) p.process()).process();
        proc.destroyForcibly();
        assertThat(proc.waitFor(10, TimeUnit.SECONDS)).isTrue();
    }

    /**
     * on-target-error=stop: B killed at 8 MiB of a rate-limited mirror; the job stops (after the
     * 1 s reconnect-delay), B comes back on the same address and port, resuming completes the
     * mirror and B holds A's disk.
     */
    @Test
    void stopPolicyCompletesOnceTheKilledRemoteIsBack() throws Exception {
        Path src = raw(Files.createDirectories(dir.resolve("a-img")), "src.raw", "write -P 0x6b 0 32M");
        Path dst = raw(Files.createDirectories(dir.resolve("b-img")), "dst.raw");
        try (HostPair hosts = HostPair.create();
             NbdPeer a = peer("jblockd", hosts.a(), dir.resolve("a"))) {
            NbdPeer b = target(hosts, dir.resolve("b"), dst);
            try {
                rawNode(a, "src", src);
                a.qmp().executeOk("blockdev-add", m("driver", "nbd", "node-name", "tgt", "server", b.nbdServer(),
                        "export", "e", "reconnect-delay", 1));
                a.qmp().executeOk("blockdev-mirror", m("device", "src", "target", "tgt", "sync", "full",
                        "speed", 8 << 20, "on-target-error", "stop", "job-id", "m"));
                awaitOffset(a, "m", 8L << 20);
                kill(b);
                b.close();
                JsonNode err = a.qmp().waitEvent("BLOCK_JOB_ERROR", WAIT);
                assertThat(err.get("data").toString())
                        .isEqualTo("{\"device\":\"m\",\"operation\":\"write\",\"action\":\"stop\"}");
                JsonNode paused = awaitPaused(a, "m");
                assertThat(paused.get("io-status").asText()).isEqualTo("failed");
                b = target(hosts, dir.resolve("b"), dst);
                boolean ready = false;
                long deadline = System.nanoTime() + WAIT.toNanos();
                while (!ready && System.nanoTime() < deadline) {
                    awaitPaused(a, "m");
                    a.qmp().drainEvents();
                    a.qmp().executeOk("block-job-resume", m("device", "m"));
                    // READY, or the next stop while the node has not reconnected yet
                    ready = nextOf(a, "BLOCK_JOB_READY", "BLOCK_JOB_ERROR").equals("BLOCK_JOB_READY");
                    if (!ready) {
                        Thread.sleep(200); // an operator's pace between resumes, not synchronisation
                    }
                }
                assertThat(ready).as("READY after resuming").isTrue();
                a.qmp().executeOk("block-job-complete", m("device", "m"));
                JsonNode done = event(a, "BLOCK_JOB_COMPLETED", "m");
                assertThat(done.get("data").has("error")).as(done.toString()).isFalse();
                assertIdentical(src, dst, "B's image after the resumed mirror");
            } finally {
                b.close();
            }
        }
    }

    /**
     * on-target-error=report (the default), reconnect-delay 0: B killed mid-mirror fails the job
     * with QEMU's events and error, the source image untouched and still A's disk; the same on
     * qemu-storage-daemon as the source.
     */
    @ParameterizedTest(name = "{0} on A")
    @ValueSource(strings = {"jblockd", "qsd"})
    void reportPolicyFailsCleanlyWhenTheRemoteIsKilled(String source) throws Exception {
        Path src = raw(Files.createDirectories(dir.resolve("a-img")), "src.raw", "write -P 0x6c 0 32M");
        Path dst = raw(Files.createDirectories(dir.resolve("b-img")), "dst.raw");
        String before = sha256(src);
        try (HostPair hosts = HostPair.create();
             NbdPeer a = peer(source, hosts.a(), dir.resolve("a"))) {
            NbdPeer b = target(hosts, dir.resolve("b"), dst);
            try {
                rawNode(a, "src", src);
                export(a, "src", "guest");
                a.qmp().executeOk("blockdev-add", m("driver", "nbd", "node-name", "tgt", "server", b.nbdServer(),
                        "export", "e"));
                a.qmp().executeOk("blockdev-mirror", m("device", "src", "target", "tgt", "sync", "full",
                        "speed", 8 << 20, "job-id", "m"));
                awaitOffset(a, "m", 8L << 20);
                kill(b);
                b.close();
                JsonNode done = event(a, "BLOCK_JOB_COMPLETED", "m");
                assertThat(done.get("data").path("error").asText()).isEqualTo("Input/output error");
                assertThat(done.get("data").get("len").asLong()).isEqualTo(32L << 20);
                List<String> errors = new ArrayList<>();
                for (JsonNode e : a.qmp().drainEvents()) {
                    if (e.get("event").asText().equals("BLOCK_JOB_ERROR")) {
                        errors.add(e.get("data").toString());
                    }
                }
                // BLOCK_JOB_ERROR comes before COMPLETED: drained with the events waitEvent skipped
                assertThat(errors).isNotEmpty().allMatch(
                        e -> e.equals("{\"device\":\"m\",\"operation\":\"write\",\"action\":\"report\"}"));
                assertThat(AcrossHosts.job(a, "m")).isNull();
                // the guest's disk is still A's own and still writable, the nbd node stays in the graph
                a.host().ok("qemu-io", "-f", "raw", "-c", "read -P 0x6c 0 1M", a.nbd("guest"));
                assertThat(a.qmp().executeOk("query-named-block-nodes").toString()).contains("\"tgt\"");
            } finally {
                b.close();
            }
        }
        assertThat(sha256(src)).as("source image after the failed mirror").isEqualTo(before);
    }

    /**
     * The link cut for less ({@code 1 s}) and for more ({@code 4 s}) than the nbd node's
     * 2 s reconnect-delay, in the middle of two mirrors into the same B at once: jblockd's and
     * qemu-storage-daemon's, both on A. A partition does not end a TCP connection (its
     * segments are retransmitted once the link is back), so reconnect-delay does not start; each
     * mirror must end as QEMU's does, and a mirror that reaches READY must have copied all.
     */
    @ParameterizedTest(name = "link down {0} s, reconnect-delay 2 s")
    @ValueSource(ints = {1, 4})
    void aPartitionEndsTheSameWayAsOnQemu(int seconds) throws Exception {
        Path aImg = Files.createDirectories(dir.resolve("a-img"));
        Path bImg = Files.createDirectories(dir.resolve("b-img"));
        Path srcJ = raw(aImg, "src-j.raw", "write -P 0x71 0 32M");
        Path srcQ = raw(aImg, "src-q.raw", "write -P 0x72 0 32M");
        Path dstJ = raw(bImg, "dst-j.raw");
        Path dstQ = raw(bImg, "dst-q.raw");
        try (HostPair hosts = HostPair.create();
             NbdPeer j = NbdPeer.jblockd(hosts.a(), HostPair.NBD_PORT, dir.resolve("aj"));
             NbdPeer q = NbdPeer.qsd(hosts.a(), HostPair.NBD_PORT + 1, dir.resolve("aq"));
             NbdPeer b = peer("jblockd", hosts.b(), dir.resolve("b"))) {
            rawNode(b, "dj", dstJ);
            export(b, "dj", "dj");
            rawNode(b, "dq", dstQ);
            export(b, "dq", "dq");
            for (NbdPeer a : List.of(j, q)) {
                String e = a == j ? "dj" : "dq";
                rawNode(a, "src", a == j ? srcJ : srcQ);
                a.qmp().executeOk("blockdev-add", m("driver", "nbd", "node-name", "tgt", "server", b.nbdServer(),
                        "export", e, "reconnect-delay", 2));
                a.qmp().executeOk("blockdev-mirror", m("device", "src", "target", "tgt", "sync", "full",
                        "speed", 8 << 20, "job-id", "m"));
            }
            awaitOffset(j, "m", 4L << 20);
            awaitOffset(q, "m", 4L << 20);
            hosts.partition();
            Thread.sleep(seconds * 1000L); // the outage being simulated, not synchronisation
            hosts.heal();
            List<String> ends = new ArrayList<>();
            for (NbdPeer a : List.of(j, q)) {
                String end = outcome(a);
                System.out.println(a.name() + " after a " + seconds + " s partition: " + end);
                ends.add(end);
            }
            assertThat(ends.get(0)).as("jblockd's mirror vs qemu-storage-daemon's").isEqualTo(ends.get(1));
            if (ends.get(0).startsWith("READY")) {
                assertIdentical(srcJ, dstJ, "jblockd's copy");
                assertIdentical(srcQ, dstQ, "qemu-storage-daemon's copy");
            }
        }
    }

    /**
     * B restarted while the link is down: its FIN never reaches A, so A learns of the loss only
     * when a retransmission meets the new B after heal (a reset). Within reconnect-delay (5 s)
     * the nbd node reconnects and resends; both mirrors (jblockd's and qemu-storage-daemon's,
     * into the same B at once) must end as each other, and a READY copy must be complete.
     */
    @Test
    void aRemoteRestartedDuringAPartitionIsReconnected() throws Exception {
        Path aImg = Files.createDirectories(dir.resolve("a-img"));
        Path bImg = Files.createDirectories(dir.resolve("b-img"));
        Path srcJ = raw(aImg, "src-j.raw", "write -P 0x73 0 32M");
        Path srcQ = raw(aImg, "src-q.raw", "write -P 0x74 0 32M");
        Path dstJ = raw(bImg, "dst-j.raw");
        Path dstQ = raw(bImg, "dst-q.raw");
        String[] twoExports = {"--blockdev", "driver=raw,node-name=dj,file.driver=file,file.filename=" + dstJ,
                "--export", "type=nbd,id=dj,node-name=dj,name=dj,writable=on",
                "--blockdev", "driver=raw,node-name=dq,file.driver=file,file.filename=" + dstQ,
                "--export", "type=nbd,id=dq,node-name=dq,name=dq,writable=on"};
        try (HostPair hosts = HostPair.create();
             NbdPeer j = NbdPeer.jblockd(hosts.a(), HostPair.NBD_PORT, dir.resolve("aj"));
             NbdPeer q = NbdPeer.qsd(hosts.a(), HostPair.NBD_PORT + 1, dir.resolve("aq"))) {
            NbdPeer b = NbdPeer.jblockd(hosts.b(), dir.resolve("b"), twoExports);
            try {
                for (NbdPeer a : List.of(j, q)) {
                    rawNode(a, "src", a == j ? srcJ : srcQ);
                    a.qmp().executeOk("blockdev-add", m("driver", "nbd", "node-name", "tgt", "server",
                            b.nbdServer(), "export", a == j ? "dj" : "dq", "reconnect-delay", 5));
                    a.qmp().executeOk("blockdev-mirror", m("device", "src", "target", "tgt", "sync", "full",
                            "speed", 8 << 20, "job-id", "m"));
                }
                awaitOffset(j, "m", 4L << 20);
                awaitOffset(q, "m", 4L << 20);
                hosts.partition();
                kill(b);
                b.close();
                b = NbdPeer.jblockd(hosts.b(), dir.resolve("b"), twoExports);
                hosts.heal();
                List<String> ends = new ArrayList<>();
                for (NbdPeer a : List.of(j, q)) {
                    String end = outcome(a);
                    System.out.println(a.name() + " after B restarted behind a partition: " + end);
                    ends.add(end);
                }
                assertThat(ends.get(0)).as("jblockd's mirror vs qemu-storage-daemon's").isEqualTo(ends.get(1));
                if (ends.get(0).startsWith("READY")) {
                    assertIdentical(srcJ, dstJ, "jblockd's copy");
                    assertIdentical(srcQ, dstQ, "qemu-storage-daemon's copy");
                }
            } finally {
                b.close();
            }
        }
    }

    /** READY (then cancelled) or COMPLETED with its error, and the BLOCK_JOB_ERROR actions seen. */
    private static String outcome(NbdPeer a) throws Exception {
        String first = nextOf(a, "BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED");
        List<String> errors = new ArrayList<>();
        String end;
        if (first.equals("BLOCK_JOB_READY")) {
            a.qmp().executeOk("block-job-cancel", m("device", "m"));
            JsonNode done = event(a, "BLOCK_JOB_COMPLETED", "m");
            end = "READY, cancelled: error " + done.get("data").path("error");
        } else {
            end = "COMPLETED before READY";
        }
        for (JsonNode e : a.qmp().drainEvents()) {
            if (e.get("event").asText().equals("BLOCK_JOB_ERROR")) {
                errors.add(e.get("data").get("action").asText());
            }
        }
        return end + ", errors " + errors.stream().distinct().toList();
    }

    /** The name of the next event that is one of {@code names} (others are kept for later). */
    private static String nextOf(NbdPeer p, String... names) throws Exception {
        long deadline = System.nanoTime() + WAIT.toNanos();
        List<JsonNode> skipped = new ArrayList<>();
        try {
            while (true) {
                JsonNode e = p.qmp().events().poll(Math.max(1, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
                if (e == null) {
                    throw new AssertionError("none of " + List.of(names) + " within " + WAIT + " on " + p.name());
                }
                if (List.of(names).contains(e.path("event").asText())) {
                    return e.get("event").asText();
                }
                skipped.add(e);
            }
        } finally {
            List<JsonNode> rest = new ArrayList<>();
            p.qmp().events().drainTo(rest);
            p.qmp().events().addAll(skipped);
            p.qmp().events().addAll(rest);
        }
    }
}
