package jblockd.compose;

import java.util.List;
import java.util.stream.Collectors;

/**
 * One event of a schedule. Each step says what it does ({@link #describe}, one line of a replay);
 * what it may expect is in {@link ScheduleRunner}, and when it is legal in
 * {@link ScheduleState#allows}. Job steps name the job they start ({@code id}, also the file
 * name of a backup or mirror target), so replays read like QMP transcripts.
 */
sealed interface Step {
    String describe();

    /** Guest requests from several clients at once on disjoint ranges; the model follows. */
    record Guest(List<GuestOp> ops) implements Step {
        @Override
        public String describe() {
            return "guest [" + ops.stream().map(GuestOp::describe).collect(Collectors.joining("; ")) + "]";
        }
    }

    /** {@code stop}, the requests (which must stay unanswered), {@code cont}, then their replies. */
    record StopCont(List<GuestOp> ops) implements Step {
        @Override
        public String describe() {
            return "stop; guest [" + ops.stream().map(GuestOp::describe).collect(Collectors.joining("; ")) + "]; cont";
        }
    }

    /**
     * drive-backup with {@code sync} full, top or none (the target's point in time is now); with
     * {@code incremental}, the next link of the checkpoint chain: a blockdev-backup sync=incremental
     * from bitmap {@code chk} into a qcow2 over the previous link, or, when there is no usable
     * checkpoint, a full one in a transaction that adds {@code chk}.
     */
    record StartBackup(String id, String sync, long speed) implements Step {
        @Override
        public String describe() {
            return (sync.equals("incremental") ? "checkpoint-chain backup" : "drive-backup") + " job-id=" + id
                    + " sync=" + sync + " speed=" + speed;
        }
    }

    /** drive-mirror with {@code sync} full or top. */
    record StartMirror(String id, String sync, long speed, String copyMode) implements Step {
        @Override
        public String describe() {
            return "drive-mirror job-id=" + id + " sync=" + sync + " speed=" + speed + " copy-mode=" + copyMode;
        }
    }

    /** block-stream into the active layer; {@code baseIndex} (position in the chain, top = 0) or -1 for none. */
    record StartStream(String id, int baseIndex, long speed) implements Step {
        @Override
        public String describe() {
            return "block-stream job-id=" + id + (baseIndex < 0 ? "" : " base=chain[" + baseIndex + "]")
                    + " speed=" + speed;
        }
    }

    /** block-commit: intermediate (chain[top] into chain[base]) or active (the top into the bottom). */
    record StartCommit(String id, boolean active, int topIndex, int baseIndex, long speed) implements Step {
        @Override
        public String describe() {
            return "block-commit job-id=" + id + (active ? " (active)" : " top=chain[" + topIndex + "] base=chain["
                    + baseIndex + "]") + " speed=" + speed;
        }
    }

    record Pause() implements Step {
        @Override
        public String describe() {
            return "block-job-pause";
        }
    }

    record Resume() implements Step {
        @Override
        public String describe() {
            return "block-job-resume";
        }
    }

    record SetSpeed(long speed) implements Step {
        @Override
        public String describe() {
            return "block-job-set-speed speed=" + speed;
        }
    }

    /** block-job-cancel (a paused job is resumed first unless {@code force}). */
    record Cancel(boolean force) implements Step {
        @Override
        public String describe() {
            return "block-job-cancel" + (force ? " force=true" : "");
        }
    }

    /** Lifts the speed limit of a job that ends by itself and waits for its end. */
    record AwaitEnd() implements Step {
        @Override
        public String describe() {
            return "await job end (set-speed 0)";
        }
    }

    /** Waits for READY of a mirror or active commit, then block-job-complete or block-job-cancel. */
    record FinishReady(boolean complete) implements Step {
        @Override
        public String describe() {
            return "await READY; " + (complete ? "block-job-complete" : "block-job-cancel");
        }
    }
}
