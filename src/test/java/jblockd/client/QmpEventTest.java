package jblockd.client;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.ObjectMapper;
import jblockd.qapi.ErrorAction;
import jblockd.qapi.IoOperation;
import jblockd.qapi.JobStatus;
import jblockd.qapi.JobType;
import org.junit.jupiter.api.Test;

/** Wire events as QEMU 7.2 sends them (reference/jobs.md §6) and their typed views. */
class QmpEventTest {
    private final ObjectMapper json = new ObjectMapper();

    private QmpEvent ev(String wire) throws Exception {
        return QmpEvent.fromWire(json.readTree(wire));
    }

    @Test
    void jobStatusChange() throws Exception {
        QmpEvent e = ev("{\"timestamp\": {\"seconds\": 1700000000, \"microseconds\": 123456},"
                + " \"event\": \"JOB_STATUS_CHANGE\", \"data\": {\"status\": \"running\", \"id\": \"drive0\"}}");
        assertThat(e.timestamp().getEpochSecond()).isEqualTo(1700000000L);
        assertThat(e.timestamp().getNano()).isEqualTo(123456000);
        assertThat(e.jobId()).contains("drive0");
        assertThat(e.asJobStatusChange()).contains(new QmpEvent.JobStatusChange("drive0", JobStatus.RUNNING));
        assertThat(e.asBlockJobEvent()).isEmpty();
    }

    @Test
    void completedWithErrorAndErrorEvent() throws Exception {
        QmpEvent c = ev("{\"event\": \"BLOCK_JOB_COMPLETED\", \"data\": {\"device\": \"j1\", \"len\": 100,"
                + " \"offset\": 40, \"speed\": 0, \"type\": \"backup\", \"error\": \"Input/output error\"},"
                + " \"timestamp\": {\"seconds\": 1, \"microseconds\": 0}}");
        QmpEvent.BlockJobEvent b = c.asBlockJobEvent().orElseThrow();
        assertThat(b.type()).isEqualTo(JobType.BACKUP);
        assertThat(b.error()).isEqualTo("Input/output error");
        assertThat(c.jobId()).contains("j1");
        QmpEvent e = ev("{\"event\": \"BLOCK_JOB_ERROR\", \"data\": {\"device\": \"j1\", \"operation\": \"read\","
                + " \"action\": \"stop\"}, \"timestamp\": {\"seconds\": 1, \"microseconds\": 0}}");
        assertThat(e.asBlockJobError()).contains(new QmpEvent.BlockJobError("j1", IoOperation.READ, ErrorAction.STOP));
    }

    @Test
    void eventWithoutDataHasAnEmptyObject() throws Exception {
        QmpEvent s = ev("{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 5, \"microseconds\": 1}}");
        assertThat(s.data().isObject()).isTrue();
        assertThat(s.data().isEmpty()).isTrue();
        assertThat(s.jobId()).isEmpty();
    }
}
