package jblockd.device;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.ByteBuffer;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import jblockd.block.Allocation;
import jblockd.block.BlockDriver;
import jblockd.block.BlockNode;
import jblockd.block.Capabilities;
import jblockd.block.Extent;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.QapiEvents;

/**
 * With the write cache off (a device's cache=writethrough|directsync, an export's writethrough)
 * every guest write reaches the driver as FUA, and every write-zeroes and discard is followed
 * by a flush before it returns; with it on, the guest's own FUA is passed on unchanged.
 */
class GuestIoDurabilityTest {

    /** Records what reaches the node, in order. */
    static final class RecordingDriver implements BlockDriver {
        final List<String> calls = new CopyOnWriteArrayList<>();

        @Override
        public String driverName() {
            return "recording";
        }

        @Override
        public void read(long offset, ByteBuffer dst) {
            calls.add("read");
            dst.position(dst.limit());
        }

        @Override
        public void write(long offset, ByteBuffer src, boolean fua) {
            calls.add(fua ? "write+fua" : "write");
            src.position(src.limit());
        }

        @Override
        public void writeZeroes(long offset, long length, boolean mayUnmap) {
            calls.add("zeroes");
        }

        @Override
        public void discard(long offset, long length) {
            calls.add("discard");
        }

        @Override
        public void flush() {
            calls.add("flush");
        }

        @Override
        public long length() {
            return 1 << 20;
        }

        @Override
        public Extent status(long offset, long length) {
            return new Extent(offset, length, Allocation.DATA);
        }

        @Override
        public Capabilities capabilities() {
            return Capabilities.readWrite();
        }

        @Override
        public void close() {
        }

        @Override
        public String filename() {
            return "recording";
        }
    }

    private static List<String> guestSequence(boolean deviceWriteCache, boolean exportWritethrough,
                                              boolean guestFua) throws Exception {
        RecordingDriver driver = new RecordingDriver();
        BlockNode node = new BlockNode("n", false, driver, false, true);
        Device device = new Device("drive0", node, BlockdevOnError.REPORT, BlockdevOnError.REPORT,
                deviceWriteCache);
        GuestIo io = new GuestIo(device, new RunState(QapiEvents.NONE, () -> { }), QapiEvents.NONE,
                exportWritethrough);
        io.write(0, ByteBuffer.allocate(512), guestFua);
        driver.calls.add("|");
        io.writeZeroes(0, 512, true, guestFua);
        driver.calls.add("|");
        io.discard(0, 512, guestFua);
        driver.calls.add("|");
        io.flush();
        return List.copyOf(driver.calls);
    }

    @ParameterizedTest(name = "device write cache {0}, export writethrough {1}, guest FUA {2}")
    @CsvSource({
        // the write cache off, from the device or the export: durable whatever the guest asked
        "false, false, false", "false, false, true", "true, true, false", "false, true, false",
        // write cache on: exactly what the guest asked
        "true, false, true"})
    void durableBeforeAcknowledgedWhenTheWriteCacheIsOffOrTheGuestAsks(boolean writeCache, boolean writethrough,
                                                                      boolean fua) throws Exception {
        assertThat(guestSequence(writeCache, writethrough, fua)).containsExactly(
                "write+fua", "|", "zeroes", "flush", "|", "discard", "flush", "|", "flush");
    }

    @Test
    void writeBackLeavesDurabilityToTheGuestsFlush() throws Exception {
        assertThat(guestSequence(true, false, false)).containsExactly(
                "write", "|", "zeroes", "|", "discard", "|", "flush");
    }
}
