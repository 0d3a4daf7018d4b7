package jblockd.client;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;
import jblockd.qapi.JobStatus;
import jblockd.qapi.JobType;

/**
 * The job commands of SPEC §3 ("jobs"). Obtained from {@link QmpClient#jobs()}. The
 * job-starting commands return a {@link Job} handle that already follows the job's events.
 */
public final class JobCommands {
    private final QmpClient qmp;

    JobCommands(QmpClient qmp) {
        this.qmp = qmp;
    }

    // ------------------------------------------------------------ starting jobs

    /** {@code drive-backup} (seed 004). */
    public Job driveBackup(DriveBackup args) {
        return start("drive-backup", args, JobType.BACKUP);
    }

    /** {@code blockdev-backup}. */
    public Job blockdevBackup(BlockdevBackup args) {
        return start("blockdev-backup", args, JobType.BACKUP);
    }

    /** {@code drive-mirror}. */
    public Job driveMirror(DriveMirror args) {
        return start("drive-mirror", args, JobType.MIRROR);
    }

    /** {@code blockdev-mirror}. */
    public Job blockdevMirror(BlockdevMirror args) {
        return start("blockdev-mirror", args, JobType.MIRROR);
    }

    /** {@code block-stream}. */
    public Job blockStream(BlockStream args) {
        return start("block-stream", args, JobType.STREAM);
    }

    /** {@code block-commit}. */
    public Job blockCommit(BlockCommit args) {
        return start("block-commit", args, JobType.COMMIT);
    }

    /**
     * {@code transaction} (reference/transactions.md): runs every action or none. Returns a
     * {@link Job} for each backup action, in list order, each subscribed to events before the
     * command was sent (the jobs' {@code created} and {@code running} events precede the reply).
     * A job without {@code job-id} gets the id of the next {@code JOB_STATUS_CHANGE created} the
     * transaction caused, in order, else its device's name (jobs.md §8).
     *
     * @throws QmpException the first failing action's error: nothing was done
     */
    public List<Job> transaction(Transaction t) {
        List<Transaction.Action> backups = t.actions().stream().filter(a -> a.backup() != null).toList();
        List<Recorder> recs = new ArrayList<>();
        for (int i = 0; i < backups.size(); i++) {
            Recorder r = new Recorder();
            qmp.connection().addInlineListener(r);
            recs.add(r);
        }
        try {
            qmp.execute("transaction", t.toJson());
        } catch (RuntimeException e) {
            recs.forEach(qmp.connection()::removeInlineListener);
            throw e;
        }
        List<String> explicit = new ArrayList<>();
        for (Transaction.Action a : backups) {
            if (a.backup().jobId() != null) {
                explicit.add(a.backup().jobId());
            }
        }
        List<String> created = recs.isEmpty() ? new ArrayList<>() : new ArrayList<>(recs.get(0).createdJobIds());
        created.removeAll(explicit);
        List<Job> jobs = new ArrayList<>();
        for (int i = 0; i < backups.size(); i++) {
            JobArgs<?> args = backups.get(i).backup();
            String id = args.jobId() != null ? args.jobId()
                    : created.contains(args.device()) ? args.device()
                    : !created.isEmpty() ? created.get(0) : args.device();
            created.remove(id);
            Job job = new Job(qmp, id, JobType.BACKUP);
            job.start(recs.get(i));
            recs.get(i).bind(job);
            jobs.add(job);
        }
        return jobs;
    }

    /**
     * Follows a job that is already running (e.g. started by another client). Events emitted
     * before this call are not seen; the first poll fills in the state.
     *
     * @throws DeviceNotActiveException no such job
     */
    public Job attach(String jobId) {
        Recorder rec = new Recorder();
        qmp.connection().addInlineListener(rec);
        BlockJobInfo info = queryBlockJobs().stream().filter(j -> j.device().equals(jobId)).findFirst()
                .orElse(null);
        if (info == null) {
            qmp.connection().removeInlineListener(rec);
            throw new DeviceNotActiveException("Block job '" + jobId + "' not found", "query-block-jobs");
        }
        Job job = new Job(qmp, jobId, info.type());
        job.assumePending(info.status() == JobStatus.PENDING && !info.autoFinalize());
        job.start(rec);
        rec.bind(job);
        return job;
    }

    /**
     * Sends a job-starting command. The recorder is subscribed first and keeps every event
     * until the job id is known: jobs.md §4/§5, the command itself emits
     * {@code J(created) J(running)...} before its reply.
     */
    private Job start(String command, JobArgs<?> args, JobType type) {
        Recorder rec = new Recorder();
        qmp.connection().addInlineListener(rec);
        try {
            qmp.execute(command, args);
        } catch (RuntimeException e) {
            qmp.connection().removeInlineListener(rec);
            throw e;
        }
        String id = args.jobId() != null ? args.jobId() : rec.createdJobId(args.device());
        Job job = new Job(qmp, id, type);
        job.start(rec);
        rec.bind(job);
        return job;
    }

    /** Buffers events until bound to a job, then forwards that job's events to it. */
    private static final class Recorder implements Consumer<QmpEvent> {
        private final List<QmpEvent> buffer = new ArrayList<>();
        private Job target;

        @Override
        public synchronized void accept(QmpEvent ev) {
            if (target == null) {
                buffer.add(ev);
            } else if (ev.jobId().map(target.id()::equals).orElse(false)) {
                target.onEvent(ev);
            }
        }

        /**
         * The id of the job the command created when the caller gave none: the id of the
         * {@code JOB_STATUS_CHANGE created} seen before the reply (preferring one equal to the
         * device name if several jobs were created meanwhile), else the device name, which is
         * QEMU's default (jobs.md §8).
         */
        synchronized String createdJobId(String device) {
            List<String> created = new ArrayList<>();
            for (QmpEvent ev : buffer) {
                ev.asJobStatusChange().filter(c -> c.status() == JobStatus.CREATED)
                        .ifPresent(c -> created.add(c.id()));
            }
            if (created.size() == 1 || (!created.isEmpty() && !created.contains(device))) {
                return created.get(0);
            }
            return device;
        }

        /** The ids of the {@code JOB_STATUS_CHANGE created} events seen so far, in order. */
        synchronized List<String> createdJobIds() {
            List<String> created = new ArrayList<>();
            for (QmpEvent ev : buffer) {
                ev.asJobStatusChange().filter(c -> c.status() == JobStatus.CREATED)
                        .ifPresent(c -> created.add(c.id()));
            }
            return created;
        }

        synchronized void bind(Job job) {
            target = job;
            for (QmpEvent ev : buffer) {
                if (ev.jobId().map(job.id()::equals).orElse(false)) {
                    job.onEvent(ev);
                }
            }
            buffer.clear();
        }
    }

    // ------------------------------------------------------------ block-job-* verbs (arg: device = job id)

    public void blockJobSetSpeed(String jobId, long bytesPerSecond) {
        qmp.execute("block-job-set-speed", obj().put("device", jobId).put("speed", bytesPerSecond));
    }

    public void blockJobPause(String jobId) {
        qmp.execute("block-job-pause", obj().put("device", jobId));
    }

    public void blockJobResume(String jobId) {
        qmp.execute("block-job-resume", obj().put("device", jobId));
    }

    /** {@code block-job-cancel}; {@code force} cancels a paused job and a READY mirror without pivot. */
    public void blockJobCancel(String jobId, boolean force) {
        ObjectNode a = obj().put("device", jobId);
        if (force) {
            a.put("force", true);
        }
        qmp.execute("block-job-cancel", a);
    }

    public void blockJobComplete(String jobId) {
        qmp.execute("block-job-complete", obj().put("device", jobId));
    }

    public void blockJobFinalize(String jobId) {
        qmp.execute("block-job-finalize", obj().put("id", jobId));
    }

    public void blockJobDismiss(String jobId) {
        qmp.execute("block-job-dismiss", obj().put("id", jobId));
    }

    /** {@code query-block-jobs}. */
    public List<BlockJobInfo> queryBlockJobs() {
        List<BlockJobInfo> out = new ArrayList<>();
        for (JsonNode n : qmp.execute("query-block-jobs", null)) {
            out.add(BlockJobInfo.from(n));
        }
        return out;
    }

    // ------------------------------------------------------------ generic job-* verbs (arg: id)

    public void jobPause(String id) {
        qmp.execute("job-pause", obj().put("id", id));
    }

    public void jobResume(String id) {
        qmp.execute("job-resume", obj().put("id", id));
    }

    public void jobCancel(String id) {
        qmp.execute("job-cancel", obj().put("id", id));
    }

    public void jobComplete(String id) {
        qmp.execute("job-complete", obj().put("id", id));
    }

    public void jobFinalize(String id) {
        qmp.execute("job-finalize", obj().put("id", id));
    }

    public void jobDismiss(String id) {
        qmp.execute("job-dismiss", obj().put("id", id));
    }

    /** {@code query-jobs}. */
    public List<JobInfo> queryJobs() {
        List<JobInfo> out = new ArrayList<>();
        for (JsonNode n : qmp.execute("query-jobs", null)) {
            out.add(JobInfo.from(n));
        }
        return out;
    }

    private static ObjectNode obj() {
        return QmpConnection.MAPPER.createObjectNode();
    }
}
