package jblockd.testsupport;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The two-host setup itself: the hosts reach each other and nothing else, a partition cuts the
 * link and heal restores it, close and the next create leave no namespace behind.
 */
class HostPairIT {
    @TempDir
    Path dir;

    /** Whether a TCP connect from {@code from} to {@code address:port} succeeds within a second. */
    private static boolean connects(Host from, String address, int port) throws Exception {
        return from.run("timeout", "1", "bash", "-c", "exec 3<>/dev/tcp/" + address + "/" + port).exit() == 0;
    }

    @Test
    void theHostsReachEachOtherOverTheirOwnLinkOnly() throws Exception {
        ExternalTools.assumeTools("qemu-img", "qemu-io", "qemu-nbd");
        Path img = dir.resolve("disk.raw");
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "raw", img.toString(), "4M");
        ExternalTools.ok("qemu-io", "-f", "raw", "-c", "write -P 0x5e 0 1M", img.toString());
        try (HostPair hosts = HostPair.create();
             QemuNbd b = QemuNbd.startTcp(hosts.b(), dir, HostPair.NBD_PORT, img, "raw", "e")) {
            assertThat(hosts.a().address()).isNotEqualTo(hosts.b().address()).startsWith("10.");
            String uri = "nbd://" + hosts.b().address() + ":" + HostPair.NBD_PORT + "/e";
            assertThat(hosts.a().ok("qemu-io", "-r", "-f", "raw", "-c", "read -P 0x5e 0 1M", uri))
                    .doesNotContain("Pattern verification failed");
            // the only routes in a host are its loopback and the pair's /30; this machine's
            // network has neither address
            assertThat(hosts.a().ok("ip", "route")).doesNotContain("default").contains(hosts.a().address());
            assertThat(hosts.b().ok("ip", "route")).doesNotContain("default").contains(hosts.b().address());
            String here = ExternalTools.ok("ip", "-o", "addr");
            assertThat(here).doesNotContain(hosts.a().address() + "/").doesNotContain(hosts.b().address() + "/");
            // and host A does not see this machine's loopback servers: its lo is its own
            assertThat(hosts.a().ok("ip", "-o", "link")).contains("lo:").contains("veth-a").doesNotContain("eth0");
        }
    }

    @Test
    void partitionCutsTheLinkAndHealRestoresIt() throws Exception {
        ExternalTools.assumeTools("qemu-img", "qemu-nbd", "timeout", "bash");
        Path img = dir.resolve("disk.raw");
        ExternalTools.ok("qemu-img", "create", "-q", "-f", "raw", img.toString(), "1M");
        try (HostPair hosts = HostPair.create();
             QemuNbd b = QemuNbd.startTcp(hosts.b(), dir, HostPair.NBD_PORT, img, "raw", "e")) {
            assertThat(connects(hosts.a(), hosts.b().address(), HostPair.NBD_PORT)).isTrue();
            hosts.partition();
            assertThat(connects(hosts.a(), hosts.b().address(), HostPair.NBD_PORT)).as("during the partition").isFalse();
            hosts.heal();
            assertThat(connects(hosts.a(), hosts.b().address(), HostPair.NBD_PORT)).as("after heal").isTrue();
        }
    }

    @Test
    void noNamespaceOutlivesItsPairOrItsTestRun() throws Exception {
        ExternalTools.assumeTools("ip");
        // as a test JVM killed mid-run leaves them: a pid above the kernel's maximum is never alive
        String stale = "jbh4194305n7a";
        HostPair first = HostPair.create();
        ExternalTools.ok("ip", "netns", "add", stale);
        String a;
        try (HostPair second = HostPair.create()) {
            a = second.a().name();
            assertThat(ExternalTools.ok("ip", "netns", "list")).contains(a).doesNotContain(stale);
        }
        first.close();
        assertThat(ExternalTools.ok("ip", "netns", "list")).doesNotContain(a).doesNotContain(first.a().name())
                .doesNotContain(first.b().name());
    }
}
