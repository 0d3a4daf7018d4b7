package jblockd.job;

import static jblockd.qapi.JobStatus.ABORTING;
import static jblockd.qapi.JobStatus.CONCLUDED;
import static jblockd.qapi.JobStatus.CREATED;
import static jblockd.qapi.JobStatus.NULL;
import static jblockd.qapi.JobStatus.PAUSED;
import static jblockd.qapi.JobStatus.PENDING;
import static jblockd.qapi.JobStatus.READY;
import static jblockd.qapi.JobStatus.RUNNING;
import static jblockd.qapi.JobStatus.STANDBY;
import static jblockd.qapi.JobStatus.UNDEFINED;
import static jblockd.qapi.JobStatus.WAITING;

import java.util.Collections;
import java.util.EnumMap;
import java.util.EnumSet;
import java.util.Map;

import jblockd.qapi.JobStatus;
import jblockd.qapi.JobVerb;
import jblockd.qapi.QmpError;

/**
 * The job lifecycle rules, and the only place they live: QEMU's {@code JobSTT} (status to
 * status) and {@code JobVerbTable} (verb by status) from job.c, as observed on QEMU 7.2
 * (reference/jobs.md §2 and §3). {@link Job#transition} checks every status change here and
 * every QMP verb goes through {@link #checkVerb}. Stateless, so the tables are constants.
 */
public final class Transitions {
    private static final Map<JobStatus, EnumSet<JobStatus>> STATUS = new EnumMap<>(JobStatus.class);
    private static final Map<JobVerb, EnumSet<JobStatus>> VERBS = new EnumMap<>(JobVerb.class);

    static {
        for (JobStatus s : JobStatus.values()) {
            STATUS.put(s, EnumSet.noneOf(JobStatus.class));
        }
        // jobs.md §2, row by row.
        STATUS.get(UNDEFINED).add(CREATED);
        STATUS.get(CREATED).addAll(EnumSet.of(RUNNING, ABORTING, NULL));
        STATUS.get(RUNNING).addAll(EnumSet.of(PAUSED, READY, WAITING, ABORTING));
        STATUS.get(PAUSED).add(RUNNING);
        STATUS.get(READY).addAll(EnumSet.of(STANDBY, WAITING, ABORTING));
        STATUS.get(STANDBY).add(READY);
        STATUS.get(WAITING).addAll(EnumSet.of(PENDING, ABORTING));
        STATUS.get(PENDING).addAll(EnumSet.of(ABORTING, CONCLUDED));
        STATUS.get(ABORTING).addAll(EnumSet.of(ABORTING, CONCLUDED));
        STATUS.get(CONCLUDED).add(NULL);

        // jobs.md §3. QEMU 7.2 accepts complete in standby too (observed).
        EnumSet<JobStatus> live = EnumSet.of(CREATED, RUNNING, PAUSED, READY, STANDBY);
        VERBS.put(JobVerb.CANCEL, EnumSet.of(CREATED, RUNNING, PAUSED, READY, STANDBY, WAITING, PENDING));
        VERBS.put(JobVerb.PAUSE, live);
        VERBS.put(JobVerb.RESUME, live);
        VERBS.put(JobVerb.SET_SPEED, live);
        VERBS.put(JobVerb.COMPLETE, EnumSet.of(READY, STANDBY));
        VERBS.put(JobVerb.FINALIZE, EnumSet.of(PENDING));
        VERBS.put(JobVerb.DISMISS, EnumSet.of(CONCLUDED));
        // 'change' (job-change) is not a QEMU 7.2 command; same statuses as set-speed.
        VERBS.put(JobVerb.CHANGE, live);
    }

    private Transitions() {
    }

    /** True when the table allows {@code from -> to} (a same-status move is checked too). */
    public static boolean allowed(JobStatus from, JobStatus to) {
        return STATUS.get(from).contains(to);
    }

    /** True when a job in {@code status} accepts {@code verb}. */
    public static boolean accepts(JobVerb verb, JobStatus status) {
        return VERBS.get(verb).contains(status);
    }

    /** The statuses reachable from {@code from}. */
    public static java.util.Set<JobStatus> next(JobStatus from) {
        return Collections.unmodifiableSet(STATUS.get(from));
    }

    /**
     * QEMU's job_apply_verb(): refuses a verb the status does not accept with the one uniform
     * message {@code Job '<id>' in state '<status>' cannot accept command verb '<verb>'}.
     */
    public static void checkVerb(String id, JobStatus status, JobVerb verb) throws QmpError {
        if (!accepts(verb, status)) {
            throw QmpError.generic("Job '" + id + "' in state '" + status.wire()
                    + "' cannot accept command verb '" + verb.wire() + "'");
        }
    }
}
