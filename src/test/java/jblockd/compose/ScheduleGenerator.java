package jblockd.compose;

import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import java.util.Random;
import java.util.Set;

import jblockd.compose.Schedule.LayerWrite;
import jblockd.compose.Schedule.Numbered;
import jblockd.compose.Schedule.Setup;

/**
 * Builds a schedule from a seed alone ({@code java.util.Random(seed)}), so the seed is the
 * whole replay. Only {@link OpKind}s in {@code kinds} are used; each step is legal in the
 * {@link ScheduleState} the previous ones lead to (jobs ending where their end step is).
 */
final class ScheduleGenerator {
    private static final long MIB = 1 << 20;
    private static final int KIB = 1024;
    private static final Set<OpKind> GUEST_KINDS = EnumSet.of(OpKind.WRITE, OpKind.ZERO, OpKind.TRIM, OpKind.READ,
            OpKind.BLOCK_STATUS, OpKind.FLUSH);

    /**
     * Which replies the NBD guests negotiate: by default at least one of each; SIMPLE or
     * STRUCTURED makes them all alike (a switch like {@link OpKind}s, for when one kind of guest
     * hits a known bug that would end every schedule early).
     */
    enum GuestMix {
        MIXED, SIMPLE, STRUCTURED;

        static GuestMix parse(String s) {
            return s == null || s.isBlank() ? MIXED : valueOf(s.trim().toUpperCase(java.util.Locale.ROOT));
        }
    }

    private final Random rnd;
    private final Set<OpKind> kinds;
    private final GuestMix mix;
    private final Setup setup;

    private ScheduleGenerator(long seed, Set<OpKind> kinds, GuestMix mix) {
        this.rnd = new Random(seed);
        this.kinds = kinds;
        this.mix = mix;
        this.setup = setup(seed);
    }

    static Schedule generate(long seed, int steps, Set<OpKind> kinds, GuestMix mix) {
        return new ScheduleGenerator(seed, kinds, mix).steps(steps);
    }

    // ==== the disk ==============================================================================

    private Setup setup(long seed) {
        boolean qcow2 = rnd.nextInt(4) != 0;
        String format = qcow2 ? "qcow2" : "raw";
        int depth = qcow2 ? 1 + rnd.nextInt(3) : 1;
        List<String> layers = switch (depth) {
            case 1 -> List.of("disk");
            case 2 -> List.of("top", "base");
            default -> List.of("top", "mid", "base");
        };
        int cluster = qcow2 ? new int[] {4 * KIB, 16 * KIB, 64 * KIB}[rnd.nextInt(3)] : 4 * KIB;
        long size = (4 + 4 * rnd.nextInt(2)) * MIB;
        List<LayerWrite> writes = new ArrayList<>();
        for (int l = depth - 1; l >= 0; l--) {
            int n = 2 + rnd.nextInt(5);
            for (int i = 0; i < n; i++) {
                int len = 4 * KIB * (1 + rnd.nextInt(96));
                long off = 4L * KIB * rnd.nextInt((int) ((size - len) / (4 * KIB)) + 1);
                // zero writes only above data: they hide the backing file's bytes
                int pattern = l < depth - 1 && rnd.nextInt(4) == 0 ? -1 : 1 + rnd.nextInt(255);
                writes.add(new LayerWrite(layers.get(l), off, len, pattern));
            }
        }
        int guests = 2 + rnd.nextInt(2);
        List<Boolean> structured = new ArrayList<>();
        structured.add(true); // at least one guest of each kind
        structured.add(false);
        for (int i = 2; i < guests; i++) {
            structured.add(rnd.nextBoolean());
        }
        if (mix != GuestMix.MIXED) { // after drawing, so the rest of the schedule stays the seed's
            structured.replaceAll(s -> mix == GuestMix.STRUCTURED);
        }
        boolean exportByNodeName = rnd.nextBoolean();
        // From a stream of its own, so that every other draw (and what each seed means) stays as
        // it was before cache modes were composed in.
        String cache = CACHE_MODES[new java.util.SplittableRandom(seed).nextInt(CACHE_MODES.length)];
        // The save buffer of the backups (issue 17), also from a stream of its own: the default,
        // off, one backup cluster (full after one saved write: the synchronous fallback runs most
        // of the time) or four.
        long backupCluster = Math.max(64 * 1024, cluster);
        long[] buffers = {-1, 0, backupCluster, 4 * backupCluster};
        long cbwBuffer = buffers[new java.util.SplittableRandom(seed * 31 + 17).nextInt(buffers.length)];
        return new Setup(seed, format, cluster, size, layers, List.copyOf(writes), List.copyOf(structured),
                exportByNodeName, cache, cbwBuffer);
    }

    /** The drive's cache modes a schedule runs under (SPEC §2: durability composed with jobs). */
    private static final String[] CACHE_MODES = {"writeback", "none", "writethrough", "directsync"};

    // ==== the steps =============================================================================

    private Schedule steps(int count) {
        ScheduleState state = new ScheduleState(setup.format(), setup.layers());
        List<Numbered> steps = new ArrayList<>();
        boolean mirrorCompletes = true;
        while (steps.size() < count || state.job() != null) {
            int i = steps.size();
            Step s;
            if (steps.size() >= count) {
                s = endOf(state.job(), mirrorCompletes); // the tail: let the last job end
            } else {
                s = state.job() == null ? idleStep(state, i) : jobStep(state, mirrorCompletes);
                if (s instanceof Step.StartMirror) {
                    mirrorCompletes = kinds.contains(OpKind.MIRROR_COMPLETE)
                            && (!kinds.contains(OpKind.MIRROR_CANCEL) || rnd.nextBoolean());
                } else if (s instanceof Step.StartCommit c && c.active()) {
                    mirrorCompletes = rnd.nextBoolean();
                }
            }
            if (!state.applyAsPlanned(s)) {
                throw new IllegalStateException("generated an illegal step " + s.describe());
            }
            steps.add(new Numbered(i, s));
        }
        return new Schedule(setup, List.copyOf(steps));
    }

    private Step idleStep(ScheduleState state, int index) {
        List<Step> starts = new ArrayList<>();
        String id = "j" + index;
        long speed = jobSpeed();
        if (kinds.contains(OpKind.BACKUP_FULL)) {
            starts.add(new Step.StartBackup(id, "full", speed));
        }
        if (kinds.contains(OpKind.BACKUP_TOP)) {
            starts.add(new Step.StartBackup(id, "top", speed));
        }
        if (kinds.contains(OpKind.BACKUP_NONE)) {
            starts.add(new Step.StartBackup(id, "none", speed));
        }
        if (kinds.contains(OpKind.BACKUP_INCREMENTAL)) {
            starts.add(new Step.StartBackup(id, "incremental", speed));
        }
        if (kinds.contains(OpKind.MIRROR_COMPLETE) || kinds.contains(OpKind.MIRROR_CANCEL)) {
            starts.add(new Step.StartMirror(id, state.chain().size() >= 2 && rnd.nextBoolean() ? "top" : "full", speed,
                    rnd.nextBoolean() ? "write-blocking" : "background"));
        }
        int depth = state.chain().size();
        if (kinds.contains(OpKind.STREAM) && depth >= 2) {
            starts.add(new Step.StartStream(id, rnd.nextBoolean() ? -1 : 1 + rnd.nextInt(depth - 1), speed));
        }
        if (kinds.contains(OpKind.COMMIT_INTERMEDIATE) && depth >= 3) {
            int top = 1 + rnd.nextInt(depth - 2);
            starts.add(new Step.StartCommit(id, false, top, top + 1 + rnd.nextInt(depth - 1 - top), speed));
        }
        if (kinds.contains(OpKind.COMMIT_ACTIVE) && depth >= 2) {
            starts.add(new Step.StartCommit(id, true, 0, depth - 1, speed));
        }
        int roll = rnd.nextInt(100);
        if (!starts.isEmpty() && roll < 30) {
            return starts.get(rnd.nextInt(starts.size()));
        }
        if (kinds.contains(OpKind.STOP_CONT) && roll < 37) {
            return new Step.StopCont(guestOps(1 + rnd.nextInt(3)));
        }
        return new Step.Guest(guestOps(1 + rnd.nextInt(6)));
    }

    private Step jobStep(ScheduleState state, boolean mirrorCompletes) {
        ScheduleState.Job job = state.job();
        int roll = rnd.nextInt(100);
        if (roll < 12 && kinds.contains(OpKind.PAUSE_RESUME)) {
            return job.paused() ? new Step.Resume() : new Step.Pause();
        }
        if (roll < 18 && kinds.contains(OpKind.SET_SPEED)) {
            return new Step.SetSpeed(rnd.nextInt(4) == 0 ? 0 : jobSpeed());
        }
        if (roll < 22 && kinds.contains(OpKind.CANCEL)) {
            return new Step.Cancel(rnd.nextInt(4) == 0);
        }
        if (roll < 34) {
            return endOf(job, mirrorCompletes);
        }
        if (roll < 40 && kinds.contains(OpKind.STOP_CONT)) {
            return new Step.StopCont(guestOps(1 + rnd.nextInt(3)));
        }
        return new Step.Guest(guestOps(1 + rnd.nextInt(6)));
    }

    /** The normal end of the running job. */
    private static Step endOf(ScheduleState.Job job, boolean mirrorCompletes) {
        if (job.shape().readyFirst()) {
            return new Step.FinishReady(mirrorCompletes);
        }
        return job.shape().endsByItself() ? new Step.AwaitEnd() : new Step.Cancel(false);
    }

    /** Slow enough (0.5-4 MiB/s) that a job runs across several guest steps; sometimes unlimited. */
    private long jobSpeed() {
        return rnd.nextInt(8) == 0 ? 0 : (512L * KIB) * (1 + rnd.nextInt(8));
    }

    // ==== guest I/O =============================================================================

    private List<GuestOp> guestOps(int count) {
        List<OpKind> enabled = GUEST_KINDS.stream().filter(kinds::contains).toList();
        List<GuestOp> ops = new ArrayList<>();
        List<long[]> taken = new ArrayList<>();
        for (int i = 0; i < count && !enabled.isEmpty(); i++) {
            int client = rnd.nextInt(setup.structuredGuests().size());
            OpKind kind = pickGuestKind(enabled, setup.structuredGuests().get(client));
            if (kind == OpKind.FLUSH) {
                ops.add(new GuestOp.Flush(client));
                continue;
            }
            long[] range = disjointRange(taken);
            if (range == null) {
                continue;
            }
            taken.add(range);
            long off = range[0];
            int len = (int) range[1];
            ops.add(switch (kind) {
                case WRITE -> new GuestOp.Write(client, off, len, rnd.nextLong(), rnd.nextInt(8) == 0);
                case ZERO -> new GuestOp.Zero(client, off, len, rnd.nextBoolean(), rnd.nextInt(4) == 0);
                case TRIM -> new GuestOp.Trim(client, off, len);
                case READ -> new GuestOp.Read(client, off, len);
                case BLOCK_STATUS -> new GuestOp.Status(client, off, len);
                default -> throw new IllegalStateException(kind.toString());
            });
        }
        return ops;
    }

    private OpKind pickGuestKind(List<OpKind> enabled, boolean structured) {
        while (true) {
            int roll = rnd.nextInt(100);
            OpKind k = roll < 35 ? OpKind.WRITE : roll < 47 ? OpKind.ZERO : roll < 55 ? OpKind.TRIM
                    : roll < 83 ? OpKind.READ : roll < 95 ? OpKind.BLOCK_STATUS : OpKind.FLUSH;
            if (enabled.contains(k) && (k != OpKind.BLOCK_STATUS || structured)) {
                return k;
            }
            if (enabled.stream().allMatch(e -> e == OpKind.BLOCK_STATUS) && !structured) {
                return OpKind.FLUSH; // nothing else this guest may do; FLUSH is harmless
            }
        }
    }

    /** {offset, length}: 512 B, 4 KiB or cluster granular, up to 256 KiB (now and then 1 MiB). */
    private long[] disjointRange(List<long[]> taken) {
        for (int attempt = 0; attempt < 8; attempt++) {
            int unit = new int[] {512, 4 * KIB, setup.clusterSize()}[rnd.nextInt(3)];
            int max = rnd.nextInt(10) == 0 ? (int) MIB : 256 * KIB;
            int len = unit * (1 + rnd.nextInt(Math.max(1, max / unit)));
            long off = (long) unit * rnd.nextInt((int) ((setup.size() - len) / unit) + 1);
            boolean free = taken.stream().noneMatch(t -> off < t[0] + t[1] && t[0] < off + len);
            if (free) {
                return new long[] {off, len};
            }
        }
        return null;
    }
}
