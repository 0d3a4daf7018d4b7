package jblockd.block.qcow2;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;

/**
 * A host file that logs every completed write and flush once {@link #startRecording()} was
 * called, for the crash simulation ({@link Qcow2CrashIT}). A discard is logged as a write of
 * zeroes and written as one (a punched hole reads as zeroes), so freed clusters really lose
 * their content in the replay.
 */
final class RecordingFile implements HostFile {
    sealed interface Event permits Write, Flush {
    }

    /** A write that completed: {@code data} is now in the file's (volatile) cache. */
    record Write(long offset, byte[] data) implements Event {
    }

    /**
     * A flush that completed: every write logged before index {@code covers} (the log's size when
     * the flush started) is durable. Writes logged after that but before this event are not.
     */
    record Flush(int covers) implements Event {
    }

    private final HostFile inner;
    private final List<Event> log = new ArrayList<>();
    private boolean recording;

    RecordingFile(HostFile inner) {
        this.inner = inner;
    }

    synchronized void startRecording() {
        recording = true;
    }

    /** A copy of the log so far. */
    synchronized List<Event> log() {
        return List.copyOf(log);
    }

    synchronized int size() {
        return log.size();
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        inner.read(offset, dst);
    }

    @Override
    public void write(long offset, ByteBuffer src) throws IOException {
        byte[] data = new byte[src.remaining()];
        src.duplicate().get(data);
        inner.write(offset, src);
        record(new Write(offset, data));
    }

    @Override
    public void flush() throws IOException {
        int covers;
        synchronized (this) {
            covers = log.size();
        }
        inner.flush();
        record(new Flush(covers));
    }

    @Override
    public long length() throws IOException {
        return inner.length();
    }

    @Override
    public void discard(long offset, long length) throws IOException {
        byte[] zeroes = new byte[(int) length];
        inner.write(offset, ByteBuffer.wrap(zeroes));
        record(new Write(offset, zeroes));
    }

    private synchronized void record(Event e) {
        if (recording) {
            log.add(e);
        }
    }
}
