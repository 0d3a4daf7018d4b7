package jblockd.block;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The conflict rules of {@link NodeGraph#attach}: QEMU's bdrv_parent_perms_conflict() and bdrv_default_perms(). */
class NodeGraphPermissionsTest {
    private static final Access READ_ONLY_SHARE_ALL = Access.of(Perm.of(Perm.CONSISTENT_READ), Perm.all());
    private static final Access NO_WRITERS = Access.of(Perm.none(), Perm.of(Perm.CONSISTENT_READ));

    @TempDir
    Path dir;

    private final NodeGraph graph = new NodeGraph(DriverRegistry.standard());
    private BlockNode file;

    @BeforeEach
    void setUp() throws Exception {
        Path img = dir.resolve("f.img");
        Files.write(img, new byte[65536]);
        file = graph.add(new BlockdevOptions.File(BlockdevOptions.Common.defaults().withNodeName("f0"), img.toString()));
    }

    @Test
    void usersThatShareWhatTheOthersNeedCoexist() throws Exception {
        graph.attach(file, NodeUser.export(false));
        graph.attach(file, NodeUser.device("drive0", true));
        graph.attach(file, NodeUser.jobNode("backup", "j0", "target", Access.PASSIVE));
        assertThat(graph.usersOf(file)).extracting(NodeUser::description)
                .containsExactly("backup job 'j0'", "block device 'drive0'", "an unnamed block device");
    }

    @Test
    void aNewWriterIsRefusedWhereAUserSharesNoWriteAndNamesBothInQemusWords() throws Exception {
        graph.attach(file, NodeUser.jobNode("stream", "s0", "intermediate node", NO_WRITERS));
        assertThatThrownBy(() -> graph.attach(file, NodeUser.export(true)))
                .isInstanceOfSatisfying(IoError.class, e -> assertThat(e.errno()).isEqualTo(Errno.EPERM))
                .hasMessage("Permission conflict on node 'f0': permissions 'write' are both required by an unnamed"
                        + " block device (uses node 'f0' as 'root' child) and unshared by stream job 's0' (uses node"
                        + " 'f0' as 'intermediate node' child).");
        assertThat(graph.usersOf(file)).hasSize(1);
    }

    @Test
    void aUserThatUnsharesWhatAnotherNeedsIsRefusedTooAndDetachLiftsIt() throws Exception {
        NodeUser writer = NodeUser.export(true);
        graph.attach(file, writer);
        NodeUser keeper = NodeUser.jobNode("stream", "s0", "intermediate node", NO_WRITERS);
        assertThatThrownBy(() -> graph.attach(file, keeper)).hasMessageContaining(
                "permissions 'write' are both required by an unnamed block device (uses node 'f0' as 'root' child)"
                        + " and unshared by stream job 's0'");
        graph.detach(file, writer);
        graph.attach(file, keeper);
        assertThat(graph.usersOf(file)).containsExactly(keeper);
    }

    @Test
    void aParentPassesItsUsersNeedsToItsChildrenAndIsNamedAsANode() throws Exception {
        // raw without offset/size is a filter of its file: a writer above writes the file
        BlockNode raw = graph.add(new BlockdevOptions.Raw(BlockdevOptions.Common.defaults().withNodeName("r0"),
                new BlockdevRef.Reference("f0"), null, null));
        graph.attach(file, NodeUser.jobNode("stream", "s0", "intermediate node", NO_WRITERS));
        assertThatThrownBy(() -> graph.attach(raw, NodeUser.device("drive0", true)))
                .hasMessage("Permission conflict on node 'f0': permissions 'write' are both required by node 'r0'"
                        + " (uses node 'f0' as 'file' child) and unshared by stream job 's0' (uses node 'f0' as"
                        + " 'intermediate node' child).");
        graph.attach(raw, NodeUser.device("drive0", false));
    }

    @Test
    void aWritableFormatHoldsWriteOnItsFileWhateverItsUsersDo() throws Exception {
        Path q = dir.resolve("q.qcow2");
        graph.drivers().creator("qcow2").orElseThrow().create(ImageCreator.Options.of(q, 1 << 20));
        BlockNode qcow2 = graph.add(graph.imageOptions(q, "qcow2", false, false, "q0"));
        BlockNode qfile = qcow2.driver().children().getFirst().node();
        // bdrv_default_perms_for_storage(): metadata writes; nobody else may write or resize the file
        assertThatThrownBy(() -> graph.attach(qfile, NodeUser.export(true)))
                .hasMessageContaining("permissions 'write' are both required by an unnamed block device")
                .hasMessageContaining("and unshared by node 'q0' (uses node '" + qfile.nodeName() + "' as 'file' child)");
        // an export unshares resize (nbd_export_create()), which q0 needs: QSD 7.2 refuses a
        // read-only export of a writable qcow2's file with this text too
        assertThatThrownBy(() -> graph.attach(qfile, NodeUser.export(false)))
                .hasMessage("Permission conflict on node '" + qfile.nodeName() + "': permissions 'resize' are both "
                        + "required by node 'q0' (uses node '" + qfile.nodeName() + "' as 'file' child) and "
                        + "unshared by an unnamed block device (uses node '" + qfile.nodeName() + "' as 'root' child).");
        assertThatThrownBy(() -> graph.attach(qfile, NodeUser.jobNode("stream", "s0", "x", NO_WRITERS)))
                .hasMessageContaining("permissions 'write, resize' are both required by node 'q0'");
    }

    @Test
    void onlyAJobsNodeBlocksAndAParentLinkIsAUserTooForRemoval() throws Exception {
        BlockNode raw = graph.add(new BlockdevOptions.Raw(BlockdevOptions.Common.defaults().withNodeName("r0"),
                new BlockdevRef.Reference("f0"), null, null));
        graph.attach(file, NodeUser.jobBackend(READ_ONLY_SHARE_ALL));
        assertThat(graph.blockerOf(file)).isEmpty();
        NodeUser job = NodeUser.jobNode("commit", "c0", "main node", Access.PASSIVE);
        graph.attach(file, job);
        assertThat(graph.blockerOf(file)).containsSame(job);
        assertThat(job.blocker()).isEqualTo("block device is in use by block job: commit");
        assertThat(graph.usersOf(file)).extracting(NodeUser::kind).containsExactly(NodeUser.Kind.JOB,
                NodeUser.Kind.BACKEND, NodeUser.Kind.PARENT);
        assertThatThrownBy(() -> graph.remove(raw.driver().children().getFirst().node()))
                .isInstanceOfSatisfying(IoError.class, e -> assertThat(e.errno()).isEqualTo(Errno.EBUSY));
    }

    @Test
    void permissionNamesFollowQemusBitOrder() {
        assertThat(Perm.names(Perm.of(Perm.RESIZE, Perm.CONSISTENT_READ, Perm.WRITE)))
                .isEqualTo("consistent read, write, resize");
    }
}
