package jblockd.commands;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import jblockd.block.Access;
import jblockd.block.BlockNode;
import jblockd.block.Errno;
import jblockd.block.ImageCreator;
import jblockd.block.IoError;
import jblockd.block.NodeGraph;
import jblockd.block.NodeUser;
import jblockd.block.Perm;
import jblockd.block.file.FileCreator;
import jblockd.block.qcow2.Qcow2Driver;
import jblockd.job.Job;
import jblockd.job.JobRegistry;
import jblockd.job.create.CreateJob;
import jblockd.qapi.QmpError;
import jblockd.qmp.CommandGroup;
import jblockd.qmp.CommandRegistry;

/**
 * {@code blockdev-create} (QEMU 7.2 block/create.c qmp_blockdev_create, block-lifecycle.json): a
 * job of type {@code create} that runs the driver's create function. As in QEMU, only the driver
 * is checked before the job exists ({@code Driver does not support blockdev-create} for raw,
 * null-co and blkdebug, which have no create function over QMP); every other error (a missing
 * node, a node in use, a bad cluster size) is the job's: {@code J(created) J(running)} before
 * the reply, then {@code J(aborting) J(concluded)} and query-jobs shows it in {@code error}. The
 * job never finalizes or dismisses itself differently from QEMU's: auto-finalize on,
 * auto-dismiss off, so it waits in {@code concluded} for {@code job-dismiss}.
 */
public final class CreateCommands implements CommandGroup {

    public record BlockdevCreateArgs(String jobId, ObjectNode options) {
    }

    /** blk_new_with_bs(bs, WRITE | RESIZE, ALL) in qcow2_co_create: the create's own backend. */
    private static final Access CREATE_ACCESS = new Access(Perm.of(Perm.WRITE, Perm.RESIZE), Perm.all());

    private final NodeGraph graph;
    private final JobRegistry jobs;

    public CreateCommands(NodeGraph graph, JobRegistry jobs) {
        this.graph = graph;
        this.jobs = jobs;
    }

    @Override
    public void register(CommandRegistry r) {
        r.register("blockdev-create", BlockdevCreateArgs.class, a -> {
            blockdevCreate(a);
            return null;
        });
    }

    private void blockdevCreate(BlockdevCreateArgs a) throws QmpError {
        ObjectNode o = a.options();
        CreateJob.Step step = switch (o.get("driver").asText()) {
            case "file" -> fileStep(o);
            case "qcow2" -> qcow2Step(o);
            default -> throw QmpError.generic("Driver does not support blockdev-create");
        };
        Job job = jobs.create(a.jobId(), new CreateJob(step), List.of(), 0, true, false);
        jobs.start(job);
    }

    /** file-posix.c raw_co_create(). */
    private static CreateJob.Step fileStep(ObjectNode o) {
        Path path = Path.of(o.get("filename").asText());
        long size = o.get("size").asLong();
        String prealloc = text(o, "preallocation", "off");
        boolean nocow = o.has("nocow") && o.get("nocow").asBoolean();
        boolean hint = o.has("extent-size-hint");
        return () -> {
            if (hint) {
                // QEMU applies it to XFS files only; jblockd sets no extent size hints
                throw new IoError(Errno.ENOTSUP, "extent-size-hint is not supported by jblockd");
            }
            FileCreator.Prealloc mode = switch (prealloc) {
                case "off" -> FileCreator.Prealloc.OFF;
                case "falloc" -> FileCreator.Prealloc.FALLOC;
                case "full" -> FileCreator.Prealloc.FULL;
                default -> throw new IoError(Errno.ENOTSUP, "Unsupported preallocation mode: " + prealloc);
            };
            FileCreator.create(path, size, mode, nocow);
        };
    }

    /** qcow2.c qcow2_co_create(): the file node first, then the options in QEMU's order. */
    private CreateJob.Step qcow2Step(ObjectNode o) throws QmpError {
        JsonNode fileRef = o.get("file");
        String version = text(o, "version", "v3");
        ImageCreator.Options opts = new ImageCreator.Options(null, o.get("size").asLong(),
                text(o, "backing-file", null), text(o, "backing-fmt", null),
                o.has("cluster-size") ? (int) Math.min(Integer.MAX_VALUE, o.get("cluster-size").asLong()) : 0,
                "v2".equals(version),
                o.has("refcount-bits") ? (int) Math.max(-1, Math.min(Integer.MAX_VALUE, o.get("refcount-bits").asLong())) : 0,
                o.has("lazy-refcounts") && o.get("lazy-refcounts").asBoolean());
        String prealloc = text(o, "preallocation", "off");
        String unsupported = unsupportedQcow2(o, prealloc);
        jblockd.block.BlockdevOptions inline = fileRef.isTextual() ? null : BlockdevOptionsCodec.decode(fileRef);
        return () -> {
            BlockNode file = inline == null ? lookup(fileRef.asText()) : graph.add(inline);
            try {
                if (unsupported != null) {
                    throw new IoError(Errno.ENOTSUP, unsupported);
                }
                NodeUser backend = NodeUser.jobBackend(CREATE_ACCESS);
                graph.attach(file, backend);
                try {
                    Qcow2Driver.createOn(file, opts);
                } finally {
                    graph.detach(file, backend);
                }
            } finally {
                if (inline != null) {
                    closeQuietly(file);
                }
            }
        };
    }

    /**
     * The qcow2 create options QEMU 7.2 has and jblockd does not lay out: refused, never
     * ignored. Null when the options are all supported.
     */
    private static String unsupportedQcow2(ObjectNode o, String prealloc) {
        if (o.has("data-file") || (o.has("data-file-raw") && o.get("data-file-raw").asBoolean())) {
            return "External data files are not supported by jblockd";
        }
        if (o.has("extended-l2") && o.get("extended-l2").asBoolean()) {
            return "Extended L2 entries are not supported by jblockd";
        }
        if (o.has("encrypt")) {
            return "Encrypted images are not supported by jblockd";
        }
        if (o.has("compression-type") && !"zlib".equals(o.get("compression-type").asText())) {
            return "Compression type '" + o.get("compression-type").asText() + "' is not supported by jblockd";
        }
        if (!"off".equals(prealloc)) {
            return "Preallocation mode '" + prealloc + "' is not supported by jblockd's qcow2 create";
        }
        return null;
    }

    private BlockNode lookup(String name) throws IoError {
        return graph.node(name).orElseThrow(() -> new IoError(Errno.ENOENT,
                "Cannot find device='" + name + "' nor node-name='" + name + "'"));
    }

    private void closeQuietly(BlockNode node) {
        try {
            graph.remove(node);
        } catch (IOException ignored) {
            // the create's own result is the one to report; the node had no other user
        }
    }

    private static String text(ObjectNode o, String name, String dflt) {
        return o.has(name) ? o.get(name).asText() : dflt;
    }
}
