package jblockd.compose;

import java.util.ArrayList;
import java.util.List;

/**
 * The abstract state a schedule moves through: the device's image chain (layer names, active
 * layer first) and the job running on it. It is the one place that says which step is legal when
 * ({@link #allows}) and what a job's end does to the chain ({@link #end}): the generator uses it
 * with the outcome it intends, the runner with the outcome the daemon reports (a job may finish
 * before a later cancel arrives), and the shrinker to keep candidate schedules well formed.
 */
final class ScheduleState {
    /** The shapes of job a schedule starts. */
    enum Shape {
        BACKUP_FULL, BACKUP_TOP, BACKUP_NONE, BACKUP_INCREMENTAL, MIRROR_FULL, MIRROR_TOP, STREAM, COMMIT_INTERMEDIATE, COMMIT_ACTIVE;

        /** Mirror and active commit go through READY and end only by complete or cancel. */
        boolean readyFirst() {
            return this == MIRROR_FULL || this == MIRROR_TOP || this == COMMIT_ACTIVE;
        }

        /** Jobs that finish their work on their own (a sync=none backup runs until cancelled). */
        boolean endsByItself() {
            return !readyFirst() && this != BACKUP_NONE;
        }

        boolean backup() {
            return this == BACKUP_FULL || this == BACKUP_TOP || this == BACKUP_NONE || this == BACKUP_INCREMENTAL;
        }
    }

    /** How a job ended, as the daemon's events say. */
    enum Outcome {
        /** BLOCK_JOB_COMPLETED after the job's work (and the pivot, for complete). */
        COMPLETED,
        /** BLOCK_JOB_COMPLETED of a READY job cancelled without force: no pivot. */
        COMPLETED_WITHOUT_PIVOT,
        /** BLOCK_JOB_CANCELLED. */
        CANCELLED
    }

    /** The job on the device: its start step's facts and whether the schedule paused it. */
    record Job(Shape shape, String id, int streamBase, int commitTop, int commitBase, boolean paused) {
        Job paused(boolean p) {
            return new Job(shape, id, streamBase, commitTop, commitBase, p);
        }
    }

    private final String format;
    private List<String> chain;
    private Job job;

    ScheduleState(String format, List<String> chain) {
        this.format = format;
        this.chain = List.copyOf(chain);
    }

    ScheduleState copy() {
        ScheduleState s = new ScheduleState(format, chain);
        s.job = job;
        return s;
    }

    String format() {
        return format;
    }

    /** Layer names, the active layer first. */
    List<String> chain() {
        return chain;
    }

    /** The running job, or null. */
    Job job() {
        return job;
    }

    boolean allows(Step step) {
        return switch (step) {
            case Step.Guest g -> true;
            case Step.StopCont s -> true;
            case Step.StartBackup b -> job == null;
            case Step.StartMirror m -> job == null && (m.sync().equals("full") || chain.size() >= 2);
            case Step.StartStream s -> job == null && chain.size() >= 2
                    && (s.baseIndex() < 0 || (s.baseIndex() >= 1 && s.baseIndex() < chain.size()));
            case Step.StartCommit c -> job == null && (c.active() ? chain.size() >= 2
                    : c.topIndex() >= 1 && c.topIndex() < c.baseIndex() && c.baseIndex() < chain.size());
            case Step.Pause p -> job != null && !job.paused();
            case Step.Resume r -> job != null && job.paused();
            case Step.SetSpeed s -> job != null;
            case Step.Cancel c -> job != null;
            case Step.AwaitEnd a -> job != null && job.shape().endsByItself();
            case Step.FinishReady f -> job != null && job.shape().readyFirst();
        };
    }

    /** The job a start step begins; requires {@link #allows}. */
    void start(Step step) {
        if (!allows(step)) {
            throw new IllegalStateException("not allowed now: " + step.describe());
        }
        job = switch (step) {
            case Step.StartBackup b -> new Job(switch (b.sync()) {
                case "full" -> Shape.BACKUP_FULL;
                case "top" -> Shape.BACKUP_TOP;
                case "incremental" -> Shape.BACKUP_INCREMENTAL;
                default -> Shape.BACKUP_NONE;
            }, b.id(), -1, -1, -1, false);
            case Step.StartMirror m -> new Job(m.sync().equals("full") ? Shape.MIRROR_FULL : Shape.MIRROR_TOP, m.id(),
                    -1, -1, -1, false);
            case Step.StartStream s -> new Job(Shape.STREAM, s.id(), s.baseIndex(), -1, -1, false);
            case Step.StartCommit c -> c.active()
                    ? new Job(Shape.COMMIT_ACTIVE, c.id(), -1, 0, chain.size() - 1, false)
                    : new Job(Shape.COMMIT_INTERMEDIATE, c.id(), -1, c.topIndex(), c.baseIndex(), false);
            default -> throw new IllegalArgumentException("not a job start: " + step.describe());
        };
    }

    /**
     * Moves on as the schedule intends (a job ends exactly where its end step is): the generator
     * builds schedules with it and the shrinker checks candidates. False, with the state
     * unchanged, when the step is not legal here.
     */
    boolean applyAsPlanned(Step step) {
        if (!allows(step)) {
            return false;
        }
        switch (step) {
            case Step.StartBackup s -> start(s);
            case Step.StartMirror s -> start(s);
            case Step.StartStream s -> start(s);
            case Step.StartCommit s -> start(s);
            case Step.Pause p -> paused(true);
            case Step.Resume r -> paused(false);
            case Step.AwaitEnd a -> end(Outcome.COMPLETED);
            case Step.FinishReady f -> end(f.complete() ? Outcome.COMPLETED : Outcome.COMPLETED_WITHOUT_PIVOT);
            case Step.Cancel c -> end(Outcome.CANCELLED);
            default -> {
                // guest I/O and speed changes leave the chain and the job as they are
            }
        }
        return true;
    }

    void paused(boolean paused) {
        job = job.paused(paused);
    }

    /** The chain once the running job has ended with {@code outcome} (QEMU's graph changes). */
    void end(Outcome outcome) {
        if (outcome == Outcome.COMPLETED) {
            chain = chainAfter(job, chain);
        }
        job = null;
    }

    private static List<String> chainAfter(Job job, List<String> chain) {
        List<String> c = new ArrayList<>();
        switch (job.shape()) {
            case BACKUP_FULL, BACKUP_TOP, BACKUP_NONE, BACKUP_INCREMENTAL -> c.addAll(chain);
            // the device pivots onto the mirror target; sync=top gave it the source's backing
            case MIRROR_FULL -> c.add(job.id());
            case MIRROR_TOP -> {
                c.add(job.id());
                c.addAll(chain.subList(1, chain.size()));
            }
            // the top keeps its data and links to base (or nothing)
            case STREAM -> {
                c.add(chain.get(0));
                if (job.streamBase() >= 0) {
                    c.addAll(chain.subList(job.streamBase(), chain.size()));
                }
            }
            // top..base-1 drop out of the chain; an active commit pivots the device onto base
            case COMMIT_INTERMEDIATE, COMMIT_ACTIVE -> {
                c.addAll(chain.subList(0, job.commitTop()));
                c.addAll(chain.subList(job.commitBase(), chain.size()));
            }
        }
        return List.copyOf(c);
    }
}
