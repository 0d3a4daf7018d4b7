package jblockd.commands;

import java.util.LinkedHashMap;
import java.util.Map;

import jblockd.device.RunState;
import jblockd.qapi.RunStatus;
import jblockd.qmp.CommandGroup;
import jblockd.qmp.CommandRegistry;

/**
 * run-state.json: {@code stop}, {@code cont}, {@code query-status} (qapi/run-state.json,
 * softmmu/cpus.c vm_stop, monitor/qmp-cmds.c qmp_cont). They act on guest I/O only; block jobs
 * are not gated by the run state (SPEC §5).
 */
public final class RunStateCommands implements CommandGroup {
    private final RunState runState;

    public RunStateCommands(RunState runState) {
        this.runState = runState;
    }

    @Override
    public void register(CommandRegistry r) {
        r.register("stop", Void.class, a -> {
            runState.stop();
            return null;
        });
        r.register("cont", Void.class, a -> {
            runState.cont();
            return null;
        });
        r.register("query-status", Void.class, a -> queryStatus());
    }

    /** StatusInfo in QEMU's member order: {@code {"status", "singlestep": false, "running"}}. */
    Map<String, Object> queryStatus() {
        RunStatus s = runState.status();
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("status", s.wire());
        m.put("singlestep", false);
        m.put("running", s == RunStatus.RUNNING);
        return m;
    }
}
