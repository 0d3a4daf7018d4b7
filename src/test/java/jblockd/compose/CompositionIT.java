package jblockd.compose;

import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Collectors;
import java.util.stream.LongStream;
import java.util.stream.Stream;

import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.io.CleanupMode;
import org.junit.jupiter.api.io.TempDir;

import jblockd.testsupport.ExternalTools;

/**
 * The randomized, model-based composition test (issue 11): seeded schedules of guest I/O from
 * several NBD clients (structured and simple replies) interleaved with backup, mirror, stream and
 * commit jobs, job verbs and stop/cont, on raw and qcow2 images with backing chains 1-3 deep,
 * held to a model of the disk ({@link ScheduleRunner} lists the expectations).
 * <p>
 * CI runs the fixed {@link #CI_SEEDS}. System properties (pass them to {@code ./mvnw}):
 * <pre>
 *   jblockd.compose.seed=S        first seed (with schedules: S, S+1, ...; alone: just S)
 *   jblockd.compose.schedules=N   long mode: N schedules from seed (default seed 1000)
 *   jblockd.compose.steps=K       steps per schedule (default 30)
 *   jblockd.compose.ops=LIST      op kinds to use ({@link OpKind}: "all", "write,read,backup-full",
 *                                 or "-stop-cont,-trim" for all but those)
 *   jblockd.compose.guests=MIX    mixed (default: structured and simple replies), simple, structured
 *   jblockd.compose.keep=1,4,9    replay only these steps of the seed's schedule (a shrunk replay)
 *   jblockd.compose.shrink=false  do not shrink (default: shrink the first failure, unless in long mode)
 *   jblockd.compose.report=FILE   also write the figures there (bin/compose-long does)
 * </pre>
 * Each failure prints its seed, the check that failed, the steps as they ran, and a shrunk replay
 * with the command line that re-runs it.
 */
@Tag("composition")
class CompositionIT {
    /** Fixed CI set: a few minutes at most on a loaded 2-core machine. */
    /**
     * Random picks, plus seeds the long mode once failed on, kept as regressions: 1178 (a
     * drive-mirror after an active commit was refused with "Need a root block node": the
     * committed top, named root0 by --drive, outlived the job and still held base as backing);
     * 20186 and 20421 (a guest zero-write was the first dirty range of an incremental backup into
     * a qcow2 attached with "backing": null: the target had no L2 table yet and the zeroes were
     * dropped as "already zero", so the restored chain showed the previous backup's data).
     */
    static final long[] CI_SEEDS = {11, 23, 37, 42, 58, 71, 86, 97, 103, 125, 1178, 20186, 20421};
    private static final int DEFAULT_STEPS = 30;
    /** Shrinking stops after this many replays or this much time per failure. */
    private static final int SHRINK_REPLAYS = 16;
    private static final long SHRINK_NANOS = 120_000_000_000L;

    // Kept when a schedule fails: the failure report points at the seed's images.
    @TempDir(cleanup = CleanupMode.ON_SUCCESS)
    Path tmp;

    /** Totals of one run of the factory, printed by its last dynamic test. */
    private static final class Totals {
        final long startNanos = System.nanoTime();
        int schedules;
        int steps;
        int skipped;
        int guestOps;
        int jobs;
        final Map<String, Integer> jobEnds = new java.util.TreeMap<>();
        final Map<Long, String> failures = new LinkedHashMap<>();

        String render(Set<OpKind> kinds) {
            double secs = (System.nanoTime() - startNanos) / 1e9;
            StringBuilder b = new StringBuilder();
            b.append(String.format("composition: %d schedules, %d steps (%d skipped after early job ends), "
                    + "%d guest ops, %d jobs, %d failures, %.1f s (%.2f s per schedule)%n", schedules, steps, skipped,
                    guestOps, jobs, failures.size(), secs, schedules == 0 ? 0 : secs / schedules));
            b.append("op kinds: ").append(OpKind.render(kinds)).append("; guests: ")
                    .append(System.getProperty("jblockd.compose.guests", "mixed")).append('\n');
            b.append("job ends in passing schedules: ").append(jobEnds).append('\n');
            Map<String, List<Long>> byCheck = new LinkedHashMap<>();
            failures.forEach((seed, check) -> byCheck.computeIfAbsent(check, k -> new ArrayList<>()).add(seed));
            byCheck.forEach((check, seeds) -> b.append("  ").append(check).append(": seeds ").append(seeds).append('\n'));
            return b.toString();
        }
    }

    @TestFactory
    Stream<DynamicTest> schedules() {
        ExternalTools.assumeTools("qemu-img", "qemu-io");
        Set<OpKind> kinds = OpKind.parse(System.getProperty("jblockd.compose.ops"));
        int steps = Integer.getInteger("jblockd.compose.steps", DEFAULT_STEPS);
        Long seed = Long.getLong("jblockd.compose.seed");
        Integer count = Integer.getInteger("jblockd.compose.schedules");
        boolean longMode = count != null;
        long[] seeds = longMode ? LongStream.range(0, count).map(i -> (seed == null ? 1000 : seed) + i).toArray()
                : seed != null ? new long[] {seed} : CI_SEEDS;
        Set<Integer> keep = parseKeep(System.getProperty("jblockd.compose.keep"));
        ScheduleGenerator.GuestMix mix = ScheduleGenerator.GuestMix.parse(System.getProperty("jblockd.compose.guests"));
        boolean shrink = Boolean.parseBoolean(System.getProperty("jblockd.compose.shrink", Boolean.toString(!longMode)));
        Totals totals = new Totals();
        Stream<DynamicTest> runs = Arrays.stream(seeds).mapToObj(s -> DynamicTest.dynamicTest("seed " + s,
                () -> runSeed(s, steps, kinds, mix, keep, shrink, totals)));
        DynamicTest summary = DynamicTest.dynamicTest("figures", () -> {
            String text = totals.render(kinds);
            System.out.print(text);
            String report = System.getProperty("jblockd.compose.report");
            if (report != null) {
                Files.writeString(Path.of(report), text);
            }
        });
        return Stream.concat(runs, Stream.of(summary));
    }

    private void runSeed(long seed, int steps, Set<OpKind> kinds, ScheduleGenerator.GuestMix mix, Set<Integer> keep,
            boolean shrink, Totals totals) throws Exception {
        Schedule schedule = ScheduleGenerator.generate(seed, steps, kinds, mix).keep(keep);
        List<String> log = new ArrayList<>();
        Path dir = Files.createTempDirectory(tmp, "seed-" + seed + "-");
        totals.schedules++;
        try {
            ScheduleRunner.Figures f = new ScheduleRunner(schedule, dir, log).run();
            totals.steps += f.steps();
            totals.skipped += f.skipped();
            totals.guestOps += f.guestOps();
            totals.jobs += f.jobs();
            f.jobEnds().forEach((k, v) -> totals.jobEnds.merge(k, v, Integer::sum));
            deleteTree(dir);
        } catch (CompositionFailure failure) {
            // shrinking replays the schedule many times: only for the run's first failure, so a
            // bug that fails many seeds does not multiply the run time
            boolean shrinkThis = shrink && totals.failures.isEmpty();
            totals.failures.put(seed, failure.check().toString());
            StringBuilder report = new StringBuilder();
            report.append("composition schedule failed: seed ").append(seed).append(", ").append(failure.check())
                    .append("\n").append(failure.getMessage()).append("\n\nsteps as they ran:\n")
                    .append(String.join("\n", log)).append("\n\nfiles kept in ").append(dir).append('\n');
            Schedule minimal = shrinkThis ? shrink(schedule, failure) : schedule.keep(upTo(schedule, failure.step()));
            report.append("\nminimal replay").append(shrinkThis ? " (shrunk)" : " (prefix up to the failing step)")
                    .append(":\n").append(minimal.render())
                    .append("re-run: ./mvnw -B verify -Dtest=none -Dsurefire.failIfNoSpecifiedTests=false "
                            + "-Dit.test=CompositionIT -Djblockd.compose.seed=").append(seed)
                    .append(" -Djblockd.compose.steps=").append(steps)
                    .append(kinds.size() == OpKind.values().length ? "" : " -Djblockd.compose.ops=" + OpKind.render(kinds))
                    .append(mix == ScheduleGenerator.GuestMix.MIXED ? "" : " -Djblockd.compose.guests=" + mix)
                    .append(" -Djblockd.compose.keep=").append(minimal.indices().stream().map(String::valueOf)
                            .collect(Collectors.joining(",")))
                    .append('\n');
            fail(report.toString(), failure);
        }
    }

    /** Step numbers up to and including {@code failedStep} (all when it is unknown). */
    private static Set<Integer> upTo(Schedule s, int failedStep) {
        return s.steps().stream().map(Schedule.Numbered::index).filter(i -> failedStep < 0 || i <= failedStep)
                .collect(Collectors.toCollection(TreeSet::new));
    }

    /**
     * Greedy shrinking within a budget: the prefix up to the failing step, then, from the end,
     * drop one step (or a whole job, from its start to its end) whenever the rest is still well
     * formed and still fails the same check. Timing makes a replay not always fail alike, so
     * the result is "a shorter schedule seen failing", not a proof of minimality.
     */
    private Schedule shrink(Schedule schedule, CompositionFailure original) throws IOException {
        Schedule best = schedule.keep(upTo(schedule, original.step()));
        long deadline = System.nanoTime() + SHRINK_NANOS;
        int replays = 0;
        List<Integer> indices = best.indices();
        for (int pos = indices.size() - 2; pos >= 0 && replays < SHRINK_REPLAYS && System.nanoTime() < deadline;
                pos--) {
            List<Integer> current = best.indices();
            if (pos >= current.size() - 1) {
                continue;
            }
            for (Set<Integer> drop : dropCandidates(best, pos)) {
                Set<Integer> keep = new TreeSet<>(current);
                keep.removeAll(drop);
                Schedule candidate = best.keep(keep);
                if (!candidate.wellFormed()) {
                    continue;
                }
                replays++;
                if (failsLike(candidate, original.check())) {
                    best = candidate;
                    break;
                }
            }
        }
        System.out.println("shrink: " + replays + " replays, " + schedule.steps().size() + " -> "
                + best.steps().size() + " steps");
        return best;
    }

    /** The step at {@code pos} alone, and for a job start the whole job up to its end step. */
    private static List<Set<Integer>> dropCandidates(Schedule s, int pos) {
        List<Schedule.Numbered> steps = s.steps();
        Step step = steps.get(pos).step();
        List<Set<Integer>> out = new ArrayList<>();
        out.add(Set.of(steps.get(pos).index()));
        boolean start = step instanceof Step.StartBackup || step instanceof Step.StartMirror
                || step instanceof Step.StartStream || step instanceof Step.StartCommit;
        if (start) {
            Set<Integer> job = new TreeSet<>();
            for (int i = pos; i < steps.size(); i++) {
                Step st = steps.get(i).step();
                boolean guest = st instanceof Step.Guest || st instanceof Step.StopCont;
                if (i == pos || !guest) {
                    job.add(steps.get(i).index());
                }
                if (st instanceof Step.AwaitEnd || st instanceof Step.FinishReady || st instanceof Step.Cancel) {
                    break;
                }
            }
            out.add(job);
        }
        return out;
    }

    private boolean failsLike(Schedule candidate, CompositionFailure.Check check) throws IOException {
        Path dir = Files.createTempDirectory(tmp, "shrink-");
        try {
            new ScheduleRunner(candidate, dir, new ArrayList<>()).run();
            return false;
        } catch (CompositionFailure f) {
            return f.check() == check;
        } catch (Exception e) {
            return false;
        } finally {
            deleteTree(dir);
        }
    }

    private static Set<Integer> parseKeep(String spec) {
        if (spec == null || spec.isBlank()) {
            return null;
        }
        return Arrays.stream(spec.split(",")).map(String::trim).map(Integer::valueOf)
                .collect(Collectors.toCollection(TreeSet::new));
    }

    private static void deleteTree(Path dir) throws IOException {
        try (Stream<Path> files = Files.walk(dir)) {
            for (Path p : files.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(p);
            }
        }
    }
}
