package jblockd.compose;

import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.stream.Collectors;

/**
 * A generated schedule: how the disk is set up, then numbered steps. The numbers are those of
 * the full schedule of {@code setup.seed()}, so a shrunk schedule ({@link #keep}) replays as
 * {@code -Djblockd.compose.seed=S -Djblockd.compose.keep=1,4,9}.
 */
record Schedule(Setup setup, List<Numbered> steps) {
    /** A step and its number in the full schedule. */
    record Numbered(int index, Step step) {
    }

    /**
     * The disk before the daemon starts: {@code layers} names the chain, active layer first
     * (files NAME.FORMAT); {@code writes} are what qemu-io puts into each layer, bottom first;
     * {@code structuredGuests} says, per NBD guest, whether it negotiates structured replies;
     * {@code cache} is the drive's cache mode (writethrough/directsync: every guest write FUA);
     * {@code cbwBuffer} the backups' x-perf.cbw-buffer-size (-1: not given, the default).
     */
    record Setup(long seed, String format, int clusterSize, long size, List<String> layers, List<LayerWrite> writes,
            List<Boolean> structuredGuests, boolean exportByNodeName, String cache, long cbwBuffer) {
        String describe() {
            return "seed=" + seed + " format=" + format + " cluster=" + clusterSize + " size=" + size + " chain="
                    + layers + " guests=" + structuredGuests.stream().map(s -> s ? "structured" : "simple").toList()
                    + " export-by=" + (exportByNodeName ? "node-name" : "device") + " cache=" + cache
                    + " cbw-buffer=" + (cbwBuffer < 0 ? "default" : cbwBuffer);
        }
    }

    /** qemu-io {@code write -P pattern} (or {@code write -z} when {@code pattern} is -1) into one layer. */
    record LayerWrite(String layer, long offset, int length, int pattern) {
        String qemuIoCommand() {
            return pattern < 0 ? "write -z " + offset + " " + length : "write -P " + pattern + " " + offset + " " + length;
        }
    }

    /** The steps numbered in {@code indices} (a shrink candidate or a replay); null keeps all. */
    Schedule keep(Set<Integer> indices) {
        if (indices == null) {
            return this;
        }
        return new Schedule(setup, steps.stream().filter(n -> indices.contains(n.index())).toList());
    }

    /** True when every step is legal where it stands (ScheduleState's rules, jobs ending as planned). */
    boolean wellFormed() {
        ScheduleState s = new ScheduleState(setup.format(), setup.layers());
        for (Numbered n : steps) {
            if (!s.applyAsPlanned(n.step())) {
                return false;
            }
        }
        return true;
    }

    List<Integer> indices() {
        return steps.stream().map(Numbered::index).collect(Collectors.toCollection(ArrayList::new));
    }

    /** The replay text: the setup, then one numbered line per step. */
    String render() {
        StringBuilder b = new StringBuilder(setup.describe()).append('\n');
        for (LayerWrite w : setup.writes()) {
            b.append("  setup ").append(w.layer()).append(": ").append(w.qemuIoCommand()).append('\n');
        }
        for (Numbered n : steps) {
            b.append(String.format("  %3d %s%n", n.index(), n.step().describe()));
        }
        return b.toString();
    }
}
