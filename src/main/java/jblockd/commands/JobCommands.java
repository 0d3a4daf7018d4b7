package jblockd.commands;

import java.util.ArrayList;
import java.util.List;

import com.fasterxml.jackson.annotation.JsonInclude;

import jblockd.job.BufferUse;
import jblockd.job.Job;
import jblockd.job.JobInfo;
import jblockd.job.JobRegistry;
import jblockd.qapi.ErrorClass;
import jblockd.qapi.IoStatus;
import jblockd.qapi.JobStatus;
import jblockd.qapi.JobType;
import jblockd.qapi.QmpError;
import jblockd.qmp.CommandGroup;
import jblockd.qmp.CommandRegistry;

/**
 * The job verbs and queries (qapi/job.json and the block-job-* commands of
 * qapi/block-core.json), with QEMU 7.2's lookups and refusals (reference/jobs.md §3):
 * {@code block-job-*} name a job by {@code device} (its id) and fail with DeviceNotActive
 * {@code Block job '<id>' not found}; {@code job-*} take {@code id} and fail with GenericError
 * {@code Job not found}. The verb table itself lives in {@link jblockd.job.Transitions}.
 */
public final class JobCommands implements CommandGroup {

    public record DeviceArg(String device) {
    }

    public record SetSpeedArgs(String device, long speed) {
    }

    public record BlockJobCancelArgs(String device, Boolean force) {
    }

    public record IdArg(String id) {
    }

    /**
     * BlockJobInfo, members in QEMU 7.2's order (reference/jobs.md §7), and jblockd's
     * {@code x-cbw-buffer} last: a backup's copy-before-write save buffer (docs/backup.md).
     */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record BlockJobInfo(boolean autoFinalize, IoStatus ioStatus, String device, boolean autoDismiss,
                               boolean busy, long len, long offset, JobStatus status, boolean paused,
                               long speed, boolean ready, JobType type, String error, BufferUse xCbwBuffer) {
        static BlockJobInfo of(JobInfo i) {
            return new BlockJobInfo(i.autoFinalize(), i.ioStatus(), i.id(), i.autoDismiss(), i.busy(), i.len(),
                    i.offset(), i.status(), i.paused(), i.speed(), i.ready(), i.type(), i.error(), i.buffer());
        }
    }

    /** JobInfo of query-jobs. */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record QueryJobInfo(long currentProgress, JobStatus status, long totalProgress, JobType type,
                               String id, String error) {
        static QueryJobInfo of(JobInfo i) {
            return new QueryJobInfo(i.offset(), i.status(), i.len(), i.type(), i.id(), i.error());
        }
    }

    private final JobRegistry jobs;

    public JobCommands(JobRegistry jobs) {
        this.jobs = jobs;
    }

    @Override
    public void register(CommandRegistry r) {
        r.register("block-job-set-speed", SetSpeedArgs.class, a -> {
            blockJob(a.device()).setSpeed(a.speed());
            return null;
        });
        r.register("block-job-pause", DeviceArg.class, a -> {
            blockJob(a.device()).userPause();
            return null;
        });
        r.register("block-job-resume", DeviceArg.class, a -> {
            blockJob(a.device()).userResume();
            return null;
        });
        r.register("block-job-cancel", BlockJobCancelArgs.class, a -> {
            blockJobCancel(a.device(), Boolean.TRUE.equals(a.force()));
            return null;
        });
        r.register("block-job-complete", DeviceArg.class, a -> {
            blockJob(a.device()).complete();
            return null;
        });
        r.register("block-job-finalize", IdArg.class, a -> {
            blockJob(a.id()).finalizeJob();
            return null;
        });
        r.register("block-job-dismiss", IdArg.class, a -> {
            blockJob(a.id()).dismiss();
            return null;
        });
        r.register("query-block-jobs", Void.class, a -> queryBlockJobs());

        r.register("job-pause", IdArg.class, a -> {
            job(a.id()).userPause();
            return null;
        });
        r.register("job-resume", IdArg.class, a -> {
            job(a.id()).userResume();
            return null;
        });
        r.register("job-cancel", IdArg.class, a -> {
            // job-cancel has no "currently paused" check and always force-cancels (qapi/job.json).
            job(a.id()).userCancel(true);
            return null;
        });
        r.register("job-complete", IdArg.class, a -> {
            job(a.id()).complete();
            return null;
        });
        r.register("job-finalize", IdArg.class, a -> {
            job(a.id()).finalizeJob();
            return null;
        });
        r.register("job-dismiss", IdArg.class, a -> {
            job(a.id()).dismiss();
            return null;
        });
        r.register("query-jobs", Void.class, a -> queryJobs());
    }

    /** qmp_block_job_cancel(): a paused job is only cancelled with force (jobs.md §3). */
    public void blockJobCancel(String device, boolean force) throws QmpError {
        Job job = blockJob(device);
        if (job.userPaused() && !force) {
            throw QmpError.generic("The block job for device '" + device + "' is currently paused");
        }
        job.userCancel(force);
    }

    public List<BlockJobInfo> queryBlockJobs() {
        List<BlockJobInfo> out = new ArrayList<>();
        for (JobInfo i : jobs.query()) {
            if (i.type().blockJob()) {
                out.add(BlockJobInfo.of(i));
            }
        }
        return out;
    }

    public List<QueryJobInfo> queryJobs() {
        List<QueryJobInfo> out = new ArrayList<>();
        for (JobInfo i : jobs.query()) {
            out.add(QueryJobInfo.of(i));
        }
        return out;
    }

    /** find_block_job(): DeviceNotActive. */
    public Job blockJob(String id) throws QmpError {
        return jobs.find(id).filter(j -> j.type().blockJob()).orElseThrow(() ->
                new QmpError(ErrorClass.DEVICE_NOT_ACTIVE, "Block job '" + id + "' not found"));
    }

    /** find_job(): GenericError. */
    public Job job(String id) throws QmpError {
        return jobs.find(id).orElseThrow(() -> QmpError.generic("Job not found"));
    }
}
