package jblockd.block.rbd;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Test;

import jblockd.block.Allocation;
import jblockd.block.BlockDriverContract;
import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.Errno;
import jblockd.block.Extent;
import jblockd.block.IoError;
import jblockd.block.ObjectLookup;
import jblockd.testsupport.CephCluster;
import jblockd.testsupport.ExternalTools;

/**
 * The rbd driver on a real one-host cluster: the driver contract every protocol driver meets,
 * then what is particular to RBD (allocation per whole object with fast-diff, as QEMU maps it;
 * resize; snapshots read-only; QEMU's open error texts), data checked with QEMU's own rbd driver.
 */
class RbdDriverIT {
    static CephCluster ceph;
    static Librbd lib;
    static final AtomicInteger names = new AtomicInteger();

    @BeforeAll
    static void cluster() throws Exception {
        ceph = CephCluster.start();
        lib = Librbd.load(new StringBuilder()).orElseThrow();
    }

    @AfterAll
    static void stop() throws Exception {
        if (ceph != null) {
            ceph.close();
        }
    }

    static String newImage(long size) throws IOException, InterruptedException {
        String name = "img" + names.incrementAndGet();
        ceph.createImage(name, size);
        return name;
    }

    static BlockdevOptions.Rbd options(String image, String snapshot, boolean readOnly) {
        BlockdevOptions.Common c = BlockdevOptions.Common.defaults().withNodeName("r" + names.get())
                .withReadOnly(readOnly);
        return new BlockdevOptions.Rbd(c, "rbd", null, image, ceph.conf().toString(), snapshot, "admin", null, null,
                null, null);
    }

    static RbdDriver open(String image) throws IOException {
        return RbdDriver.open(lib, options(image, null, false), ObjectLookup.NONE);
    }

    @Nested
    class Contract extends BlockDriverContract {
        @Override
        protected BlockNode open(Path d, long size) throws IOException {
            try {
                String name = newImage(size);
                return new BlockNode("rbd" + names.get(), false, RbdDriverIT.open(name), false, true);
            } catch (InterruptedException e) {
                throw new IOException(e);
            }
        }
    }

    @Test
    void allocationIsPerWholeObjectAsQemuMapsIt() throws Exception {
        String name = newImage(64L << 20);
        try (RbdDriver d = open(name)) {
            d.write(0, ByteBuffer.wrap(new byte[1 << 20]).put(0, (byte) 1), false);
            d.write(4L << 20, ByteBuffer.allocate(65536).put(0, (byte) 2), false);
            d.writeZeroes(8L << 20, 65536, false);
            d.flush();
            assertThat(d.status(0, 64L << 20)).isEqualTo(new Extent(0, 8L << 20, Allocation.DATA));
            Extent rest = d.status(8L << 20, 56L << 20);
            // QEMU maps the same image: 0-8M data, the rest zero (reference/ceph.md §4)
            String map = ExternalTools.ok("qemu-img", "map", "-f", "raw", "--output=json", ceph.rbdName(name));
            assertThat(map).contains("\"start\": 0, \"length\": 8388608").contains("\"data\": true");
            assertThat(rest.allocation()).isEqualTo(Allocation.ZERO);
            assertThat(d.clusterSize()).isEqualTo(4 << 20);
        }
    }

    @Test
    void dataWrittenHereReadsBackThroughQemusDriver() throws Exception {
        String name = newImage(16L << 20);
        try (RbdDriver d = open(name)) {
            byte[] b = new byte[3 << 20];
            java.util.Arrays.fill(b, (byte) 0x5a);
            d.write(1L << 20, ByteBuffer.wrap(b), true);
        }
        ExternalTools.ok("qemu-io", "-f", "raw", "-c", "read -P 0x5a 1M 3M", "-c", "read -P 0 0 1M",
                "-c", "write -P 0x77 8M 1M", ceph.rbdName(name));
        try (RbdDriver d = open(name)) {
            ByteBuffer r = ByteBuffer.allocateDirect(1 << 20);
            d.read(8L << 20, r);
            assertThat(r.flip().get(12345)).isEqualTo((byte) 0x77);
        }
    }

    @Test
    void resizeGrowsWithZeroes() throws Exception {
        String name = newImage(4L << 20);
        try (RbdDriver d = open(name)) {
            d.truncate(12L << 20);
            assertThat(d.length()).isEqualTo(12L << 20);
            ByteBuffer r = ByteBuffer.allocate(4096);
            d.read(10L << 20, r);
            assertThat(r.array()).containsOnly(0);
        }
        assertThat(ceph.rbd("info", "rbd/" + name)).contains("size 12 MiB");
    }

    @Test
    void aSnapshotOpensReadOnlyWithTheDataOfItsTime() throws Exception {
        String name = newImage(8L << 20);
        try (RbdDriver d = open(name)) {
            d.write(0, ByteBuffer.wrap(new byte[] {1, 2, 3}), true);
        }
        ceph.rbd("snap", "create", "rbd/" + name + "@s1");
        try (RbdDriver d = open(name)) {
            d.write(0, ByteBuffer.wrap(new byte[] {9, 9, 9}), true);
        }
        try (RbdDriver snap = RbdDriver.open(lib, options(name, "s1", false), ObjectLookup.NONE)) {
            assertThat(snap.capabilities().readOnly()).isTrue();
            ByteBuffer r = ByteBuffer.allocate(3);
            snap.read(0, r);
            assertThat(r.array()).containsExactly(1, 2, 3);
        }
    }

    @Test
    void openErrorsAreQemus() throws Exception {
        assertThatThrownBy(() -> open("nosuch")).isInstanceOfSatisfying(IoError.class,
                e -> assertThat(e.errno()).isEqualTo(Errno.ENOENT))
                .hasMessage("error reading header from nosuch: No such file or directory");
        BlockdevOptions.Rbd noPool = new BlockdevOptions.Rbd(BlockdevOptions.Common.defaults(), "nopool", null, "x",
                ceph.conf().toString(), null, "admin", null, null, null, null);
        assertThatThrownBy(() -> RbdDriver.open(lib, noPool, ObjectLookup.NONE))
                .hasMessage("error opening pool nopool: No such file or directory");
        BlockdevOptions.Rbd noConf = new BlockdevOptions.Rbd(BlockdevOptions.Common.defaults(), "rbd", null, "x",
                "/nonexistent/ceph.conf", null, null, null, null, null, null);
        assertThatThrownBy(() -> RbdDriver.open(lib, noConf, ObjectLookup.NONE))
                .hasMessage("error reading conf file /nonexistent/ceph.conf: No such file or directory");
        BlockdevOptions.Rbd noSecret = new BlockdevOptions.Rbd(BlockdevOptions.Common.defaults(), "rbd", null, "x",
                null, null, "admin", List.of("cephx"), "k0", null, null);
        assertThatThrownBy(() -> RbdDriver.open(lib, noSecret, ObjectLookup.NONE)).hasMessage("No secret with id 'k0'");
    }

    @Test
    void filenamesParseAsQemuDoes() throws Exception {
        BlockdevOptions.Rbd o = RbdFilenames.parse("rbd:pool/ns/im\\:age@snap:conf=/c\\:f:id=bob:mon_host=1.2.3.4",
                BlockdevOptions.Common.defaults());
        assertThat(o.pool()).isEqualTo("pool");
        assertThat(o.namespace()).isEqualTo("ns");
        assertThat(o.image()).isEqualTo("im:age");
        assertThat(o.snapshot()).isEqualTo("snap");
        assertThat(o.conf()).isEqualTo("/c:f");
        assertThat(o.user()).isEqualTo("bob");
        assertThat(o.confPairs()).hasSize(1);
        assertThat(o.confPairs().get(0)).containsExactly("mon_host", "1.2.3.4");
        assertThatThrownBy(() -> RbdFilenames.parse("rbd:image", BlockdevOptions.Common.defaults()))
                .hasMessage("Pool name is required");
        assertThatThrownBy(() -> RbdFilenames.parse("rbd:p/i:conf", BlockdevOptions.Common.defaults()))
                .hasMessage("conf option conf has no value");
        assertThat(RbdFilenames.filename(new BlockdevOptions.Rbd(BlockdevOptions.Common.defaults(), "rbd", null, "t1",
                "/tmp/cc/ceph.conf", null, "admin", null, null, null, null)))
                .isEqualTo("json:{\"pool\": \"rbd\", \"image\": \"t1\", \"conf\": \"/tmp/cc/ceph.conf\", "
                        + "\"driver\": \"rbd\", \"user\": \"admin\"}");
    }
}
