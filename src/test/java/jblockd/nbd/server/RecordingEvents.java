package jblockd.nbd.server;

import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;

import jblockd.qapi.ErrorAction;
import jblockd.qapi.IoOperation;
import jblockd.qapi.JobStatus;
import jblockd.qapi.JobType;
import jblockd.qapi.QapiEvents;

/** Records events as short strings, in order. */
final class RecordingEvents implements QapiEvents {
    final List<String> events = new CopyOnWriteArrayList<>();

    public void jobStatusChange(String id, JobStatus status) { }
    public void blockJobCompleted(JobType t, String d, long l, long o, long s, String e) { }
    public void blockJobCancelled(JobType t, String d, long l, long o, long s) { }
    public void blockJobError(String d, IoOperation op, ErrorAction a) { }
    public void blockJobReady(JobType t, String d, long l, long o, long s) { }
    public void blockJobPending(JobType t, String id) { }

    public void blockIoError(String d, String n, IoOperation op, ErrorAction a, Boolean ns, String r) {
        events.add("BLOCK_IO_ERROR " + d + " " + n + " " + op.wire() + " " + a.wire() + " " + ns + " " + r);
    }

    public void stop() {
        events.add("STOP");
    }

    public void resume() {
        events.add("RESUME");
    }

    public void shutdown(boolean guest, String reason) { }

    @Override
    public void blockExportDeleted(String id) { }
    public void blockWriteThreshold(String n, long a, long t) { }
}
