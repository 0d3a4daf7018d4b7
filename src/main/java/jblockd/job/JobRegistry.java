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
import jblockd.block.IoError;
import jblockd.block.NodeGraph;
import jblockd.block.NodeUser;
import jblockd.qapi.QapiEvents;
import jblockd.qapi.QmpError;

/**
 * The jobs of one daemon (no static state: a test can run two registries). Creates jobs with
 * QEMU's id rules, attaches each job's {@link JobUse}s to the {@link NodeGraph} (whose permission
 * check and op blockers refuse conflicting users, other jobs and blockdev-del alike), answers the
 * queries and cancels everything at shutdown. Thread-safe.
 *
 * <h2>Using it for a new job type</h2>
 * <pre>{@code
 *   registry.checkNotBusy(sourceNode, deviceName);           // before touching the graph
 *   Job job = registry.create(id, driver, List.of(JobUse.node(src, "source", access), ...),
 *                             speed, autoFinalize, autoDismiss);
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
    /** What each live job has attached to the graph, to detach when it goes. */
    private final Map<Job, List<Attached>> jobUses = new IdentityHashMap<>();
    /** What to release when each job goes ({@link #whenGone}). */
    private final Map<Job, List<Runnable>> whenGone = new IdentityHashMap<>();

    private record Attached(BlockNode node, NodeUser user) {
    }
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

    /**
     * Refuses a node some job keeps (its op blocker): {@code Node '<name>' is busy: block device
     * is in use by block job: <type>}, {@code name} being the device name when the node has one.
     * Like QEMU 7.2 (observed side by side), the running job is drained twice on the way
     * ({@code J(paused) J(running) J(paused) J(running)}).
     */
    public void checkNotBusy(BlockNode node, String displayName) throws QmpError {
        Optional<NodeUser> blocker = graph.blockerOf(node);
        if (blocker.isEmpty()) {
            return;
        }
        Optional<Job> owner = ownerOf(blocker.get());
        for (int i = 0; owner.isPresent() && i < 2; i++) {
            owner.get().drainBegin();
            owner.get().drainEnd();
        }
        throw QmpError.generic("Node '" + displayName + "' is busy: " + blocker.get().blocker());
    }

    /**
     * Creates a job in status {@code created} and attaches its {@code uses} in order. A node
     * another job keeps is refused before the job exists; a permission conflict after it was
     * created drops it again ({@code J(created) J(null)}, QEMU's block_job_add_bdrv() failing),
     * and so does a negative speed, exactly as QEMU 7.2 does.
     */
    public Job create(String id, JobDriver driver, List<JobUse> uses, long speed,
                      boolean autoFinalize, boolean autoDismiss) throws QmpError {
        return create(id, driver, uses, speed, autoFinalize, autoDismiss, new JobTxn());
    }

    /**
     * {@link #create(String, JobDriver, List, long, boolean, boolean)} as a member of
     * {@code txn} (a grouped transaction's jobs, QEMU block_job_create(..., txn, ...)): the job
     * joins it as soon as it exists, and leaves it again if its creation fails.
     */
    public Job create(String id, JobDriver driver, List<JobUse> uses, long speed,
                      boolean autoFinalize, boolean autoDismiss, JobTxn txn) throws QmpError {
        if (id == null || !WELL_FORMED.matcher(id).matches()) {
            throw QmpError.generic("Invalid job ID '" + (id == null ? "" : id) + "'");
        }
        Job job;
        synchronized (this) {
            if (jobs.containsKey(id)) {
                throw QmpError.generic("Job ID '" + id + "' already in use");
            }
            for (JobUse u : uses) {
                Optional<NodeUser> blocker = graph.blockerOf(u.node());
                if (blocker.isPresent()) {
                    throw QmpError.generic("Node '" + u.node().nodeName() + "' is busy: " + blocker.get().blocker());
                }
            }
            Job[] self = new Job[1];
            job = new Job(id, driver, events, autoFinalize, autoDismiss, () -> removed(self[0]), txn);
            self[0] = job;
            job.onRelease(() -> releaseUses(job));
            txn.add(job);
            jobs.put(id, job);
            jobUses.put(job, new ArrayList<>());
            settingUp.add(job);
        }
        job.created(Math.max(0, speed));
        try {
            for (JobUse u : uses) {
                attach(job, u);
            }
        } catch (QmpError e) {
            job.earlyFail();
            throw e;
        }
        if (speed < 0) {
            job.earlyFail();
            throw QmpError.generic("Parameter 'speed' expects a non-negative value");
        }
        return job;
    }

    /**
     * Attaches one more use of a live job (a filter node inserted after creation), checked
     * like the others ({@code Permission conflict on node ...}).
     */
    public synchronized void attach(Job job, JobUse use) throws QmpError {
        List<Attached> mine = jobUses.get(job);
        if (mine == null || jobs.get(job.id()) != job) {
            return;
        }
        NodeUser user = use.userFor(job);
        try {
            graph.attach(use.node(), user);
        } catch (IoError e) {
            throw QmpError.generic(e.getMessage());
        }
        mine.add(new Attached(use.node(), user));
    }

    /** Stops using a node for a job (a job that closes its own target before it ends). */
    public synchronized void unblock(Job job, BlockNode node) {
        List<Attached> mine = jobUses.get(job);
        if (mine != null) {
            mine.removeIf(a -> {
                if (a.node() == node) {
                    graph.detach(a.node(), a.user());
                    return true;
                }
                return false;
            });
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

    /**
     * Throws away a created job whose command's transaction rolled back (QEMU
     * drive_backup_abort(): job_cancel_sync()): {@code J(aborting) J(concluded) J(null)}, no
     * end event, its driver's abort and clean run; with it, the rest of its job transaction.
     * Returns once it is gone. Nothing for a job that already ended.
     */
    public void abortUnstarted(Job job) {
        job.cancel(true, true);
    }

    /** Detaches the job's node uses (idempotent): what makes its nodes free for other users. */
    private void releaseUses(Job job) {
        synchronized (this) {
            List<Attached> mine = jobUses.get(job);
            if (mine != null) {
                for (Attached a : mine) {
                    graph.detach(a.node(), a.user());
                }
                mine.clear();
            }
        }
    }

    private void removed(Job job) {
        List<Runnable> releases;
        synchronized (this) {
            if (job == null || jobs.get(job.id()) != job) {
                return;
            }
            jobs.remove(job.id());
            settingUp.remove(job);
            List<Attached> mine = jobUses.remove(job);
            if (mine != null) {
                for (Attached a : mine) {
                    graph.detach(a.node(), a.user());
                }
            }
            releases = whenGone.remove(job);
        }
        // Outside the registry's monitor (closing a node flushes it: queries must not wait for
        // that I/O), but before JOB_STATUS_CHANGE(null) goes out, since the caller still holds the
        // job's lock: a client that saw null may use the nodes at once.
        if (releases != null) {
            for (Runnable release : releases) {
                release.run();
            }
        }
    }

    /**
     * Runs {@code action} once {@code job} has let go of its nodes, just before it goes to null
     * (at once when it is gone already): what a job leaves behind (a node it replaced, a target
     * it opened) is released before anyone can see the job gone, as QEMU drops them in the
     * job's own completion. The action must not throw.
     */
    public void whenGone(Job job, Runnable action) {
        synchronized (this) {
            if (jobs.get(job.id()) == job) {
                whenGone.computeIfAbsent(job, j -> new ArrayList<>()).add(action);
                return;
            }
        }
        action.run();
    }

    /** A started job by id (one still being set up is not found). */
    public synchronized Optional<Job> find(String id) {
        return Optional.ofNullable(jobs.get(id)).filter(j -> !settingUp.contains(j));
    }

    /** The job that keeps {@code node} with an op blocker, if any. */
    public Optional<Job> jobUsing(BlockNode node) {
        return graph.blockerOf(node).flatMap(this::ownerOf);
    }

    private synchronized Optional<Job> ownerOf(NodeUser user) {
        for (Map.Entry<Job, List<Attached>> e : jobUses.entrySet()) {
            for (Attached a : e.getValue()) {
                if (a.user() == user) {
                    return Optional.of(e.getKey());
                }
            }
        }
        return Optional.empty();
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
