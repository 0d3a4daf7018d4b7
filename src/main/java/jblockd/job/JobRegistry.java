package jblockd.job;

import java.util.ArrayList;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.regex.Pattern;

import jblockd.block.BlockNode;
import jblockd.block.NodeGraph;
import jblockd.qapi.QapiEvents;
import jblockd.qapi.QmpError;

/**
 * The jobs of one daemon (no static state: a test can run two registries). Creates jobs with
 * QEMU's id rules, keeps one job per node (the job is registered as a user of its nodes in the
 * {@link NodeGraph}, so blockdev-del of a node in use fails too), answers the queries and cancels
 * everything at shutdown. Thread-safe.
 *
 * <h2>Using it for a new job type</h2>
 * <pre>{@code
 *   registry.checkNotBusy(sourceNode, deviceName);           // before touching the graph
 *   Job job = registry.create(id, driver, List.of(src, tgt), speed, autoFinalize, autoDismiss);
 *   // ... graph changes that must precede the reply (filters) ...
 *   registry.start(job);                                     // J(running) before the reply
 * }</pre>
 * If a step between create and start fails, call {@link #discard(Job)} (emits {@code J(null)}).
 */
public final class JobRegistry {
    /** QEMU id_wellformed(): a letter, then letters, digits, '-', '_', '.'. */
    private static final Pattern WELL_FORMED = Pattern.compile("[A-Za-z][A-Za-z0-9._-]*");

    private final QapiEvents events;
    private final NodeGraph graph;
    private final Map<String, Job> jobs = new LinkedHashMap<>();
    private final Map<BlockNode, Job> nodeOwners = new IdentityHashMap<>();
    private final Map<Job, List<BlockNode>> jobNodes = new IdentityHashMap<>();
    /**
     * Jobs created but not started: their command is still putting their graph (filters) in
     * place. They hold their id and nodes, but queries and verbs do not see them, so nobody can
     * cancel a job whose filter is half inserted (QEMU inserts the filter before it creates the
     * job, all under one lock).
     */
    private final Set<Job> settingUp = Collections.newSetFromMap(new IdentityHashMap<>());

    public JobRegistry(QapiEvents events, NodeGraph graph) {
        this.events = events;
        this.graph = graph;
    }

    /** The user string QEMU's op blocker shows: {@code block device is in use by block job: backup}. */
    static String blockerText(Job job) {
        return "block device is in use by block job: " + job.type().wire();
    }

    /**
     * Refuses a node some job already uses: {@code Node '<name>' is busy: block device is in use
     * by block job: <type>}, {@code name} being the device name when the node has one.
     * Like QEMU 7.2 (observed side by side), the running job is drained twice on the way
     * ({@code J(paused) J(running) J(paused) J(running)}).
     */
    public void checkNotBusy(BlockNode node, String displayName) throws QmpError {
        Job owner;
        synchronized (this) {
            owner = nodeOwners.get(node);
        }
        if (owner != null) {
            for (int i = 0; i < 2; i++) {
                owner.drainBegin();
                owner.drainEnd();
            }
            throw QmpError.generic("Node '" + displayName + "' is busy: " + blockerText(owner));
        }
    }

    /**
     * Creates a job in status {@code created} and blocks {@code nodes} for it. With a negative
     * speed the job is created and dropped again ({@code J(created) J(null)}) before the error,
     * exactly as QEMU 7.2 does.
     */
    public Job create(String id, JobDriver driver, List<BlockNode> nodes, long speed,
                      boolean autoFinalize, boolean autoDismiss) throws QmpError {
        if (id == null || !WELL_FORMED.matcher(id).matches()) {
            throw QmpError.generic("Invalid job ID '" + (id == null ? "" : id) + "'");
        }
        Job job;
        synchronized (this) {
            if (jobs.containsKey(id)) {
                throw QmpError.generic("Job ID '" + id + "' already in use");
            }
            for (BlockNode n : nodes) {
                Job owner = nodeOwners.get(n);
                if (owner != null) {
                    throw QmpError.generic("Node '" + n.nodeName() + "' is busy: " + blockerText(owner));
                }
            }
            Job[] self = new Job[1];
            job = new Job(id, driver, events, autoFinalize, autoDismiss, () -> removed(self[0]));
            self[0] = job;
            jobs.put(id, job);
            settingUp.add(job);
            jobNodes.put(job, new ArrayList<>());
            for (BlockNode n : nodes) {
                blockLocked(job, n);
            }
        }
        job.created(Math.max(0, speed));
        if (speed < 0) {
            job.earlyFail();
            throw QmpError.generic("Parameter 'speed' expects a non-negative value");
        }
        return job;
    }

    /** Adds a node to those a job blocks (a filter inserted after creation). */
    public synchronized void block(Job job, BlockNode node) {
        if (jobs.get(job.id()) == job) {
            blockLocked(job, node);
        }
    }

    private void blockLocked(Job job, BlockNode n) {
        if (nodeOwners.putIfAbsent(n, job) == null) {
            jobNodes.get(job).add(n);
            graph.addUser(n, blockerText(job));
        }
    }

    /** Stops blocking a node for a job (a job that closes its own target before it ends). */
    public synchronized void unblock(Job job, BlockNode node) {
        if (nodeOwners.get(node) == job) {
            nodeOwners.remove(node);
            List<BlockNode> nodes = jobNodes.get(job);
            if (nodes != null) {
                nodes.remove(node);
            }
            graph.removeUser(node, blockerText(job));
        }
    }

    /**
     * Starts a created job's thread (status running before this returns); from now on the job
     * is visible to queries and verbs. Call it once the job's graph is in place.
     */
    public void start(Job job) {
        JobRunner.start(job);
        synchronized (this) {
            settingUp.remove(job);
        }
    }

    /** Drops a created job whose setup failed (created → null). */
    public void discard(Job job) {
        job.earlyFail();
    }

    private synchronized void removed(Job job) {
        if (job == null || jobs.get(job.id()) != job) {
            return;
        }
        jobs.remove(job.id());
        settingUp.remove(job);
        List<BlockNode> nodes = jobNodes.remove(job);
        if (nodes != null) {
            for (BlockNode n : nodes) {
                nodeOwners.remove(n);
                graph.removeUser(n, blockerText(job));
            }
        }
    }

    /** A started job by id (one still being set up is not found). */
    public synchronized Optional<Job> find(String id) {
        return Optional.ofNullable(jobs.get(id)).filter(j -> !settingUp.contains(j));
    }

    /** The job that blocks {@code node}, if any. */
    public synchronized Optional<Job> jobUsing(BlockNode node) {
        return Optional.ofNullable(nodeOwners.get(node));
    }

    /** The started jobs, in creation order. */
    public synchronized List<Job> all() {
        return jobs.values().stream().filter(j -> !settingUp.contains(j)).toList();
    }

    /** Snapshots of every job not yet null, in creation order. */
    public List<JobInfo> query() {
        List<JobInfo> out = new ArrayList<>();
        for (Job j : all()) {
            JobInfo i = j.info();
            if (i.status() != jblockd.qapi.JobStatus.NULL) {
                out.add(i);
            }
        }
        return out;
    }

    /**
     * Shutdown (quit, SIGTERM): force-cancels every running job, waits for each to end (bounded),
     * then dismisses the concluded ones (QEMU emits {@code null} for them at quit).
     */
    public void cancelAll(long timeout, TimeUnit unit) {
        long deadline = System.nanoTime() + unit.toNanos(timeout);
        List<Job> list = all();
        for (Job j : list) {
            j.cancel(true, false);
        }
        for (Job j : list) {
            j.awaitEnd(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
            j.dismissAtShutdown();
        }
    }
}
