package jblockd.qmp;

import java.util.Arrays;

/**
 * Cuts a QMP input byte stream into JSON texts, one per top-level value, without parsing them
 * (Netty's JsonObjectDecoder: track nesting and strings only). Parsing is the next stage.
 * <pre>
 *   {"execute":"a"}{"execute":"b"}      two texts on one line
 *   {"execute":                         one text over several reads/lines
 *     "c"}
 *   42  garbage  "s"  [1]               top-level scalars and arrays are texts too (they earn
 *                                       an error reply each, as in QEMU's json-streamer.c)
 * </pre>
 * Any whitespace separates texts. Strings may use double or single quotes (QEMU's extension)
 * and backslash escapes; braces inside strings do not count.
 * <p>
 * Bounds: a text longer than {@code maxLength} bytes is not buffered further; the sink gets one
 * error ({@code JSON token size limit exceeded}, QEMU's wording for its own 64 MiB bound) and
 * the framer skips to the end of that value, then carries on. Nesting deeper than
 * {@code maxDepth} is handled the same way ({@code JSON nesting depth limit exceeded}). Unlike
 * QEMU, which resets and then complains about every leftover token, the skipped rest of the
 * value produces no further replies. Not thread-safe: one framer per connection.
 */
public final class QmpFramer {

    /** Receives framed texts and framing errors, in input order. */
    public interface Sink {
        void text(byte[] json);

        void error(String desc);
    }

    private enum State { IDLE, STRUCT, STRING_SCALAR, WORD }

    private final int maxLength;
    private final int maxDepth;
    private byte[] buf = new byte[256];
    private int len;
    private State state = State.IDLE;
    private int depth;
    private byte quote;       // 0 when not inside a string
    private boolean escape;
    private boolean discarding;

    public QmpFramer(int maxLength, int maxDepth) {
        this.maxLength = maxLength;
        this.maxDepth = maxDepth;
    }

    /** Feeds bytes; complete texts go to the sink before this returns. */
    public void feed(byte[] data, int off, int n, Sink sink) {
        for (int i = off; i < off + n; i++) {
            byte b = data[i];
            switch (state) {
                case IDLE -> idle(b, sink);
                case STRUCT -> struct(b, sink);
                case STRING_SCALAR -> stringScalar(b, sink);
                case WORD -> word(b, sink);
            }
        }
    }

    /** True when a value has started but not ended (bytes are pending). */
    public boolean inValue() {
        return state != State.IDLE;
    }

    private void idle(byte b, Sink sink) {
        if (isSpace(b)) {
            return;
        }
        discarding = false;
        len = 0;
        switch (b) {
            case '{', '[' -> {
                state = State.STRUCT;
                depth = 1;
                quote = 0;
                escape = false;
                append(b, sink);
            }
            case '"', '\'' -> {
                state = State.STRING_SCALAR;
                quote = b;
                escape = false;
                append(b, sink);
            }
            case '}', ']', ',', ':' -> {
                append(b, sink);
                emit(sink);
            }
            default -> {
                state = State.WORD;
                append(b, sink);
            }
        }
    }

    private void struct(byte b, Sink sink) {
        append(b, sink);
        if (quote != 0) {
            if (escape) {
                escape = false;
            } else if (b == '\\') {
                escape = true;
            } else if (b == quote) {
                quote = 0;
            }
            return;
        }
        switch (b) {
            case '"', '\'' -> quote = b;
            case '{', '[' -> {
                depth++;
                if (depth > maxDepth && !discarding) {
                    discarding = true;
                    sink.error("JSON nesting depth limit exceeded");
                }
            }
            case '}', ']' -> {
                depth--;
                if (depth == 0) {
                    emit(sink);
                }
            }
            default -> {
            }
        }
    }

    private void stringScalar(byte b, Sink sink) {
        append(b, sink);
        if (escape) {
            escape = false;
        } else if (b == '\\') {
            escape = true;
        } else if (b == quote) {
            quote = 0;
            emit(sink);
        }
    }

    private void word(byte b, Sink sink) {
        if (isSpace(b) || b == '{' || b == '[' || b == '}' || b == ']' || b == '"' || b == '\''
                || b == ',' || b == ':') {
            emit(sink);
            idle(b, sink);
            return;
        }
        append(b, sink);
    }

    private void append(byte b, Sink sink) {
        if (discarding) {
            return;
        }
        if (len == maxLength) {
            discarding = true;
            len = 0;
            sink.error("JSON token size limit exceeded");
            return;
        }
        if (len == buf.length) {
            buf = Arrays.copyOf(buf, Math.min(maxLength, buf.length * 2));
        }
        buf[len++] = b;
    }

    private void emit(Sink sink) {
        state = State.IDLE;
        depth = 0;
        quote = 0;
        if (!discarding) {
            sink.text(Arrays.copyOf(buf, len));
        }
        discarding = false;
        len = 0;
        if (buf.length > 64 * 1024) {
            buf = new byte[256]; // do not keep a huge buffer after one big message
        }
    }

    private static boolean isSpace(byte b) {
        return b == ' ' || b == '\n' || b == '\r' || b == '\t';
    }
}
