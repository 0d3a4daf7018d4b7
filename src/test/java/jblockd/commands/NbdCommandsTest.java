package jblockd.commands;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.ObjectMapper;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import jblockd.block.BlockNode;
import jblockd.block.BlockdevOptions;
import jblockd.block.DriverRegistry;
import jblockd.block.NodeGraph;
import jblockd.device.Device;
import jblockd.device.Devices;
import jblockd.device.RunState;
import jblockd.nbd.proto.Nbd;
import jblockd.nbd.server.NbdServer;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.QapiEvents;
import jblockd.qapi.QmpError;

class NbdCommandsTest {
    @TempDir
    Path dir;

    private final ObjectMapper json = new ObjectMapper();
    private NbdServer server;
    private NbdCommands cmds;
    private NodeGraph graph;
    private Devices devices;
    private RunState runState;

    @BeforeEach
    void setUp() throws Exception {
        graph = new NodeGraph(DriverRegistry.standard());
        devices = new Devices(graph);
        Path img = dir.resolve("a.raw");
        Files.write(img, new byte[1 << 20]);
        BlockNode node = graph.add(new BlockdevOptions.File(BlockdevOptions.Common.defaults().withNodeName("disk0"),
                img.toString()));
        devices.add(new Device("drive0", node, BlockdevOnError.REPORT, BlockdevOnError.ENOSPC));
        runState = new RunState(QapiEvents.NONE, () -> { });
        server = new NbdServer();
        cmds = new NbdCommands(server, devices, graph, runState, QapiEvents.NONE, new jblockd.object.ObjectRegistry());
    }

    @AfterEach
    void tearDown() {
        server.stop();
    }

    private void start() throws Exception {
        cmds.nbdServerStart(new NbdCommands.NbdServerStart(json.readTree(
                "{\"type\":\"unix\",\"data\":{\"path\":\"" + dir.resolve("s.sock") + "\"}}"), null, null, null));
    }

    @Test
    void serverStartsOnceAndStopsOnce() throws Exception {
        assertThatThrownBy(() -> cmds.nbdServerAdd(new NbdCommands.NbdServerAdd("drive0", null, null, null, null)))
                .hasMessage("NBD server not running");
        assertThatThrownBy(() -> cmds.nbdServerAdd(new NbdCommands.NbdServerAdd("nope", null, null, null, null)))
                .hasMessage("Cannot find device='nope' nor node-name='nope'");
        assertThatThrownBy(() -> cmds.nbdServerStart(new NbdCommands.NbdServerStart(json.readTree(
                "{\"type\":\"inet\",\"data\":{\"host\":\"127.0.0.1\",\"port\":\"0\"}}"), "tls0", null, null)))
                .hasMessage("No TLS credentials with id 'tls0'");
        assertThat(server.running()).isFalse();
        start();
        assertThatThrownBy(this::start).hasMessage("NBD server already running");
        cmds.nbdServerStop();
        assertThatThrownBy(() -> cmds.nbdServerStop()).hasMessage("NBD server not running");
    }

    @Test
    void flatAndLegacyAddressesBothWork() throws Exception {
        cmds.nbdServerStart(new NbdCommands.NbdServerStart(json.readTree(
                "{\"type\":\"inet\",\"host\":\"127.0.0.1\",\"port\":\"0\"}"), null, null, null));
        assertThat(server.running()).isTrue();
        cmds.nbdServerStop();
        cmds.nbdServerStart(new NbdCommands.NbdServerStart(json.readTree(
                "{\"type\":\"inet\",\"data\":{\"host\":\"127.0.0.1\",\"port\":\"0\"}}"), null, null, 4L));
        assertThat(server.running()).isTrue();
        assertThatThrownBy(() -> NbdCommands.socketAddress(json.readTree("{\"type\":\"inet\",\"data\":{\"host\":\"h\"}}")))
                .hasMessage("Parameter 'addr.data.port' is missing");
    }

    @Test
    void exportsAreListedAndErrorsUseQemuTexts() throws Exception {
        start();
        cmds.nbdServerAdd(new NbdCommands.NbdServerAdd("drive0", null, "d", true, null));
        cmds.blockExportAdd(new NbdCommands.BlockExportAdd("nbd", "e1", "disk0", false, null, "n1", null));
        assertThatThrownBy(() -> cmds.blockExportAdd(new NbdCommands.BlockExportAdd("nbd", "e1", "disk0", false,
                null, "n2", null))).hasMessage("Block export id 'e1' is already in use");
        assertThatThrownBy(() -> cmds.blockExportAdd(new NbdCommands.BlockExportAdd("nbd", "e2", "disk0", false,
                null, "n1", null))).hasMessage("NBD server already has export named 'n1'");
        assertThatThrownBy(() -> cmds.blockExportAdd(new NbdCommands.BlockExportAdd("nbd", "e3", "nope", false,
                null, null, null))).hasMessage("Cannot find device='' nor node-name='nope'");
        assertThatThrownBy(() -> cmds.blockExportAdd(new NbdCommands.BlockExportAdd("nbd", "1x", "disk0", false,
                null, null, null))).hasMessage("Invalid block export id");
        List<Map<String, Object>> q = cmds.queryBlockExports();
        assertThat(q).hasSize(2);
        assertThat(json.writeValueAsString(q.get(0)))
                .isEqualTo("{\"type\":\"nbd\",\"id\":\"drive0\",\"node-name\":\"disk0\",\"shutting-down\":false}");
        assertThat(graph.usersOf(graph.node("disk0").orElseThrow()))
                .filteredOn(u -> u.description().equals("an unnamed block device")).hasSize(2);
        assertThatThrownBy(() -> cmds.blockExportDel(new NbdCommands.BlockExportDel("zz", null)))
                .hasMessage("Export 'zz' is not found");
        cmds.blockExportDel(new NbdCommands.BlockExportDel("e1", null));
        assertThat(graph.usersOf(graph.node("disk0").orElseThrow()))
                .filteredOn(u -> u.description().equals("an unnamed block device")).hasSize(1);
        assertThat(cmds.queryBlockExports()).hasSize(1);
    }

    @Test
    void exportOnADeviceGoesThroughThatDeviceAndOnANodeThroughAnAnonymousOne() throws Exception {
        start();
        cmds.blockExportAdd(new NbdCommands.BlockExportAdd("nbd", "d", null, true, null, "viadev", null, "drive0"));
        cmds.blockExportAdd(new NbdCommands.BlockExportAdd("nbd", "n", "disk0", true, null, "vianode", null));
        cmds.blockExportAdd(new NbdCommands.BlockExportAdd("nbd", "byname", "drive0", true, null, "byname", null));
        assertThat(server.export("viadev").orElseThrow().io().device().name()).isEqualTo("drive0");
        assertThat(server.export("byname").orElseThrow().io().device().name()).isEqualTo("drive0");
        assertThat(server.export("vianode").orElseThrow().io().device().name()).isEmpty();
        assertThat(server.export("vianode").orElseThrow().io().device().rerror()).isEqualTo(BlockdevOnError.REPORT);
        assertThat(server.export("vianode").orElseThrow().io().device().werror()).isEqualTo(BlockdevOnError.REPORT);
        assertThatThrownBy(() -> cmds.blockExportAdd(new NbdCommands.BlockExportAdd("nbd", "x", null, true, null,
                null, null, "nodev"))).hasMessage("Device 'nodev' not found");
        assertThatThrownBy(() -> cmds.blockExportAdd(new NbdCommands.BlockExportAdd("nbd", "x", null, true, null,
                null, null, null))).hasMessage("Parameter 'node-name' is missing");
    }

    @Test
    void safeRemoveRefusesWhileAClientIsConnectedAndHardDisconnectsIt() throws Exception {
        start();
        cmds.nbdServerAdd(new NbdCommands.NbdServerAdd("drive0", "exp", null, true, null));
        try (SocketChannel ch = SocketChannel.open(UnixDomainSocketAddress.of(dir.resolve("s.sock")))) {
            DataInputStream in = new DataInputStream(Channels.newInputStream(ch));
            DataOutputStream out = new DataOutputStream(Channels.newOutputStream(ch));
            in.readFully(new byte[18]);
            out.writeInt(3);
            byte[] name = "exp".getBytes(StandardCharsets.UTF_8);
            out.writeLong(Nbd.IHAVEOPT);
            out.writeInt(Nbd.OPT_EXPORT_NAME);
            out.writeInt(name.length);
            out.write(name);
            out.flush();
            assertThat(in.readLong()).isEqualTo(1 << 20);
            in.readShort();
            assertThatThrownBy(() -> cmds.nbdServerRemove(new NbdCommands.NbdServerRemove("exp", null)))
                    .isInstanceOf(QmpError.class).hasMessage("export 'exp' still in use");
            assertThatThrownBy(() -> cmds.nbdServerRemove(new NbdCommands.NbdServerRemove("exp", "safe")))
                    .hasMessage("export 'exp' still in use");
            cmds.nbdServerRemove(new NbdCommands.NbdServerRemove("exp", "hard"));
            assertThat(in.read()).isEqualTo(-1); // the server hung up
        }
        assertThat(cmds.queryBlockExports()).isEmpty();
    }

    @Test
    void queryStatusFollowsStopAndCont() {
        RunStateCommands rs = new RunStateCommands(runState);
        assertThat(rs.queryStatus()).containsExactly(Map.entry("status", "running"), Map.entry("singlestep", false),
                Map.entry("running", true));
        runState.stop();
        assertThat(rs.queryStatus()).containsEntry("status", "paused").containsEntry("running", false);
        runState.cont();
        assertThat(rs.queryStatus()).containsEntry("status", "running");
    }

}
