package jblockd.block.blkdebug;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.BlockdevRef;
import jblockd.block.DriverRegistry;
import jblockd.block.Errno;
import jblockd.block.ImageCreator;
import jblockd.block.IoError;
import jblockd.block.NodeGraph;

class BlkdebugTest {
    private static final int MIB = 1 << 20;

    @TempDir
    Path dir;
    private Path img;
    private NodeGraph graph;

    @BeforeEach
    void image() throws IOException {
        img = dir.resolve("disk.raw");
        graph = new NodeGraph(DriverRegistry.standard());
        graph.drivers().creator("raw").orElseThrow().create(ImageCreator.Options.of(img, 4 * MIB));
    }

    @AfterEach
    void close() {
        graph.closeAll();
    }

    private BlockNode blkdebug(String config, List<BlockdevOptions.InjectError> inline, Integer align)
            throws IOException {
        Path cfg = null;
        if (config != null) {
            cfg = dir.resolve("blkdebug.conf");
            Files.writeString(cfg, config);
        }
        // discard=unmap, so discards reach blkdebug's rules
        BlockdevOptions.Common c = new BlockdevOptions.Common(null, false, false, false, true);
        return graph.add(new BlockdevOptions.Blkdebug(c,
                new BlockdevRef.Inline(new BlockdevOptions.File(c, img.toString())),
                cfg == null ? null : cfg.toString(), inline, align));
    }

    private static Errno readErrno(BlockNode n, long offset, int len) {
        try {
            n.read(offset, ByteBuffer.allocate(len));
            return null;
        } catch (IoError e) {
            return e.errno();
        } catch (IOException e) {
            throw new AssertionError(e);
        }
    }

    private static Errno writeErrno(BlockNode n, long offset, int len) {
        try {
            n.write(offset, ByteBuffer.allocate(len), false);
            return null;
        } catch (IoError e) {
            return e.errno();
        } catch (IOException e) {
            throw new AssertionError(e);
        }
    }

    @Test
    void configFileReadRuleFailsEveryReadWithEioAndNeverWrites() throws IOException {
        BlockNode n = blkdebug("""
                [inject-error]
                event = "read_aio"
                errno = "5"
                """, List.of(), null);
        assertThat(readErrno(n, 0, 512)).isEqualTo(Errno.EIO);
        assertThat(readErrno(n, 3 * MIB, 4096)).isEqualTo(Errno.EIO);
        assertThat(writeErrno(n, 0, 512)).isNull();
        n.flush();
        n.writeZeroes(0, 4096, true);
        assertThatThrownBy(() -> n.read(0, ByteBuffer.allocate(1)))
                .isInstanceOf(IoError.class).hasMessage("Input/output error");
    }

    @Test
    void enospcErrnoOnWritesAndZeroWritesAndDiscards() throws IOException {
        BlockNode n = blkdebug("""
                # out of space on every write
                [inject-error]
                event = "write_aio"
                errno = "28"
                """, List.of(), null);
        assertThat(writeErrno(n, 4096, 4096)).isEqualTo(Errno.ENOSPC);
        assertThatThrownBy(() -> n.writeZeroes(0, 512, false))
                .isInstanceOfSatisfying(IoError.class, e -> assertThat(e.errno()).isEqualTo(Errno.ENOSPC));
        assertThatThrownBy(() -> n.discard(0, 512))
                .isInstanceOfSatisfying(IoError.class, e -> assertThat(e.errno()).isEqualTo(Errno.ENOSPC))
                .hasMessage("No space left on device");
        assertThat(readErrno(n, 0, 512)).as("a write rule never fails reads").isNull();
        n.flush();
        // nothing reached the file
        assertThat(Files.readAllBytes(img)).containsOnly((byte) 0);
    }

    @Test
    void sectorRuleFailsOnlyRequestsCoveringThatSector() throws IOException {
        BlockNode n = blkdebug("""
                [inject-error]
                event = "read_aio"
                sector = "2048"
                """, List.of(), null);
        long at = 2048L * 512;
        assertThat(readErrno(n, at, 512)).isEqualTo(Errno.EIO);
        assertThat(readErrno(n, at - 512, 1024)).isEqualTo(Errno.EIO);
        assertThat(readErrno(n, at, 1)).as("the sector's first byte is what counts").isEqualTo(Errno.EIO);
        assertThat(readErrno(n, at + 511, 1)).as("as in blkdebug.c: offset = sector * 512 must be covered")
                .isNull();
        assertThat(readErrno(n, at - 512, 512)).as("ends right before").isNull();
        assertThat(readErrno(n, at + 1, 4096)).as("starts after the sector's first byte").isNull();
        assertThat(readErrno(n, 0, 4 * MIB)).as("covers everything").isEqualTo(Errno.EIO);
    }

    @Test
    void onceRuleFiresOnceThenRequestsSucceed() throws IOException {
        BlockNode n = blkdebug("""
                [inject-error]
                event = "write_aio"
                errno = "5"
                once = "on"
                """, List.of(), null);
        assertThat(writeErrno(n, 0, 512)).isEqualTo(Errno.EIO);
        assertThat(writeErrno(n, 0, 512)).isNull();
        assertThat(writeErrno(n, 0, 512)).isNull();
        assertThat(((BlkdebugDriver) n.driver()).armedRules()).isZero();
    }

    @Test
    void flushRuleFailsFlushesOnly() throws IOException {
        BlockNode n = blkdebug("""
                [inject-error]
                event = "flush_to_disk"
                errno = "5"
                """, List.of(), null);
        assertThatThrownBy(n::flush)
                .isInstanceOfSatisfying(IoError.class, e -> assertThat(e.errno()).isEqualTo(Errno.EIO));
        assertThat(writeErrno(n, 0, 512)).isNull();
        assertThat(readErrno(n, 0, 512)).isNull();
    }

    @Test
    void flushIgnoresRulesWithASector() throws IOException {
        BlockNode n = blkdebug("""
                [inject-error]
                event = "flush_to_disk"
                sector = "0"
                """, List.of(), null);
        n.flush();
    }

    @Test
    void inlineRulesAddToConfigFileRules() throws IOException {
        BlockNode n = blkdebug("""
                [inject-error]
                event = "read_aio"
                sector = "0"
                """, List.of(new BlockdevOptions.InjectError("write_aio", 28, 8L, true, null)), null);
        assertThat(readErrno(n, 0, 512)).isEqualTo(Errno.EIO);
        assertThat(readErrno(n, 4096, 512)).isNull();
        assertThat(writeErrno(n, 0, 512)).isNull();
        assertThat(writeErrno(n, 4096, 512)).isEqualTo(Errno.ENOSPC);
        assertThat(writeErrno(n, 4096, 512)).as("once").isNull();
    }

    @Test
    void inlineOnlyRuleWithIotypeNarrowsToThatKind() throws IOException {
        BlockNode n = blkdebug(null, List.of(
                new BlockdevOptions.InjectError("write_aio", null, null, false, "write-zeroes")), null);
        assertThat(writeErrno(n, 0, 512)).isNull();
        assertThatThrownBy(() -> n.writeZeroes(0, 512, false))
                .isInstanceOfSatisfying(IoError.class, e -> assertThat(e.errno()).isEqualTo(Errno.EIO));
    }

    /** QMP's inject-error.state / set-state drive the same engine as the config file's groups. */
    @Test
    void inlineStateRulesAndSetStateFollowTheStateMachine() throws IOException {
        BlockdevOptions.Common c = BlockdevOptions.Common.defaults();
        BlockNode n = graph.add(new BlockdevOptions.Blkdebug(c,
                new BlockdevRef.Inline(new BlockdevOptions.File(c, img.toString())), null,
                List.of(new BlockdevOptions.InjectError("read_aio", 5, null, false, null, 2L, true),
                        new BlockdevOptions.InjectError("write_aio", 28, 0L, true, null, 3L, false)),
                null, List.of(new BlockdevOptions.SetState("write_aio", 1L, 2),
                        new BlockdevOptions.SetState("read_aio", 2L, 3))));
        BlkdebugDriver d = (BlkdebugDriver) n.driver();
        assertThat(d.state()).isEqualTo(1);
        assertThat(readErrno(n, 0, 512)).as("read rule is armed in state 2 only").isNull();
        assertThat(writeErrno(n, 0, 512)).isNull();
        assertThat(d.state()).isEqualTo(2);
        assertThat(readErrno(n, 0, 512)).as("state 2: fails, then moves to 3").isEqualTo(Errno.EIO);
        assertThat(d.state()).isEqualTo(3);
        assertThat(readErrno(n, 0, 512)).as("state 3: the read rule is off again").isNull();
        assertThat(writeErrno(n, 4096, 512)).as("state 3 write rule covers sector 0 only").isNull();
        assertThat(writeErrno(n, 0, 512)).isEqualTo(Errno.ENOSPC);
        assertThat(writeErrno(n, 0, 512)).as("once").isNull();
        assertThat(d.armedRules()).isEqualTo(1);
    }

    @Test
    void inlineSetStateAddsToConfigFileSetState() throws IOException {
        Path cfg = dir.resolve("states.conf");
        Files.writeString(cfg, """
                [set-state]
                event = "read_aio"
                state = "1"
                new_state = "2"
                """);
        BlockdevOptions.Common c = BlockdevOptions.Common.defaults();
        BlockNode n = graph.add(new BlockdevOptions.Blkdebug(c,
                new BlockdevRef.Inline(new BlockdevOptions.File(c, img.toString())), cfg.toString(),
                List.of(new BlockdevOptions.InjectError("write_aio", 5, null, false, null, 4L, false)), null,
                List.of(new BlockdevOptions.SetState("read_aio", 2L, 4))));
        assertThat(writeErrno(n, 0, 512)).isNull();
        assertThat(readErrno(n, 0, 512)).isNull(); // 1 -> 2 (file rule)
        assertThat(readErrno(n, 0, 512)).isNull(); // 2 -> 4 (QMP rule)
        assertThat(((BlkdebugDriver) n.driver()).state()).isEqualTo(4);
        assertThat(writeErrno(n, 0, 512)).isEqualTo(Errno.EIO);
    }

    @Test
    void outOfRangeInlineStateIsRefused() {
        BlockdevOptions.Common c = BlockdevOptions.Common.defaults();
        assertThatThrownBy(() -> graph.add(new BlockdevOptions.Blkdebug(c,
                new BlockdevRef.Inline(new BlockdevOptions.File(c, img.toString())), null, List.of(), null,
                List.of(new BlockdevOptions.SetState("read_aio", null, 1L << 40)))))
                .isInstanceOfSatisfying(IoError.class, e -> assertThat(e.errno()).isEqualTo(Errno.EINVAL));
    }

    @Test
    void quotesAreOptionalCommentsAreSkippedAndUnknownErrnoIsEio() throws IOException {
        BlockNode n = blkdebug("""
                # a comment
                  [inject-error]
                event=read_aio   # trailing comment
                errno = 1234
                immediately = "off"
                """, List.of(), null);
        assertThat(readErrno(n, 0, 1)).isEqualTo(Errno.EIO);
    }

    @Test
    void ruleOfAnotherStateNeverFires() throws IOException {
        BlockNode n = blkdebug("""
                [inject-error]
                event = "read_aio"
                state = "2"
                """, List.of(), null);
        assertThat(readErrno(n, 0, 512)).isNull();
    }

    @Test
    void setStateArmsRulesOfTheNewStateFromTheNextRequestOn() throws IOException {
        BlockNode n = blkdebug("""
                [set-state]
                event = "write_aio"
                state = "1"
                new_state = "2"

                [set-state]
                event = "flush_to_disk"
                state = "2"
                new_state = "3"

                [inject-error]
                event = "read_aio"
                state = "2"
                errno = "28"
                """, List.of(), null);
        BlkdebugDriver d = (BlkdebugDriver) n.driver();
        assertThat(readErrno(n, 0, 512)).as("state 1: reads pass").isNull();
        assertThat(d.state()).isEqualTo(1);
        assertThat(writeErrno(n, 0, 512)).isNull();
        assertThat(d.state()).isEqualTo(2);
        assertThat(readErrno(n, 0, 512)).isEqualTo(Errno.ENOSPC);
        assertThat(readErrno(n, 4096, 512)).isEqualTo(Errno.ENOSPC);
        n.flush();
        assertThat(d.state()).isEqualTo(3);
        assertThat(readErrno(n, 0, 512)).as("state 3: the rule is off again").isNull();
    }

    @Test
    void badConfigsAreRefusedClearlyAndOpenNothing() throws IOException {
        assertThatThrownBy(() -> blkdebug("[set-state]\nevent = \"read_aio\"\n", List.of(), null))
                .hasMessageContaining("Parameter 'new_state' is missing");
        assertThatThrownBy(() -> blkdebug("[set-state]\nevent = \"read_aio\"\nnew_state = \"2\"\nerrno = \"5\"\n",
                List.of(), null)).hasMessageContaining("Invalid parameter 'errno'");
        assertThatThrownBy(() -> blkdebug("[inject-error]\nevent = \"no_such_event\"\n", List.of(), null))
                .hasMessageContaining("Invalid parameter 'no_such_event'");
        assertThatThrownBy(() -> blkdebug("[inject-error]\nevent = \"l2_load\"\n", List.of(), null))
                .hasMessageContaining("blkdebug event 'l2_load' is not supported by jblockd");
        assertThatThrownBy(() -> blkdebug("[inject-error]\nerrno = \"5\"\n", List.of(), null))
                .hasMessageContaining("Missing event name for rule");
        assertThatThrownBy(() -> blkdebug("[inject-error]\nevent = \"read_aio\"\nbogus = \"1\"\n", List.of(), null))
                .hasMessageContaining("Invalid parameter 'bogus'");
        assertThatThrownBy(() -> blkdebug("event = \"read_aio\"\n", List.of(), null))
                .hasMessageContaining("Could not parse blkdebug config file");
        assertThatThrownBy(() -> blkdebug(null, List.of(), 3000)).hasMessage("Cannot meet constraints with align 3000");
        // discard=unmap, so discards reach blkdebug's rules
        BlockdevOptions.Common c = new BlockdevOptions.Common(null, false, false, false, true);
        assertThatThrownBy(() -> graph.add(new BlockdevOptions.Blkdebug(c,
                new BlockdevRef.Inline(new BlockdevOptions.File(c, img.toString())),
                dir.resolve("missing.conf").toString(), List.of(), null)))
                .isInstanceOfSatisfying(IoError.class, e -> assertThat(e.errno()).isEqualTo(Errno.ENOENT))
                .hasMessage("Could not read blkdebug config file: No such file or directory");
        assertThat(graph.nodes()).isEmpty();
    }

    @Test
    void alignIsAdvertisedInCapabilities() throws IOException {
        BlockNode n = blkdebug(null, List.of(), 4096);
        assertThat(n.capabilities().requestAlignment()).isEqualTo(4096);
        assertThat(n.capabilities().growable()).isTrue();
    }

    @Test
    void blkdebugFilenameFormOpensThroughImageOptionsAndInjects() throws IOException {
        Path cfg = dir.resolve("rules.conf");
        Files.writeString(cfg, """
                [inject-error]
                event = "read_aio"
                errno = "28"
                sector = "16"
                once = "on"
                """);
        BlockNode disk = graph.add(graph.imageOptions(Path.of("blkdebug:" + cfg + ":" + img), "raw", false, false,
                "disk"));
        assertThat(disk.driver().driverName()).isEqualTo("raw");
        BlockNode filter = disk.driver().children().getFirst().node();
        assertThat(filter.driver().driverName()).isEqualTo("blkdebug");
        assertThat(filter.driver().children().getFirst().node().driver().driverName()).isEqualTo("file");
        assertThat(disk.driver().filename()).isEqualTo("blkdebug:" + cfg + ":" + img);

        disk.write(8192, ByteBuffer.wrap(new byte[] {7}), false);
        assertThat(readErrno(disk, 0, 4096)).isNull();
        assertThat(readErrno(disk, 8192, 512)).isEqualTo(Errno.ENOSPC);
        ByteBuffer back = ByteBuffer.allocate(1);
        disk.read(8192, back);
        assertThat(back.get(0)).isEqualTo((byte) 7);
    }
}
