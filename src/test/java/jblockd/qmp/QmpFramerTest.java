package jblockd.qmp;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Test;

/** QmpFramer fed whole and one byte at a time (Netty RedisDecoderTest style). */
class QmpFramerTest {
    private static List<String> frame(String input, int max, boolean byteAtATime) {
        List<String> out = new ArrayList<>();
        QmpFramer f = new QmpFramer(max, 8);
        QmpFramer.Sink sink = new QmpFramer.Sink() {
            @Override
            public void text(byte[] json) {
                out.add(new String(json, StandardCharsets.UTF_8));
            }

            @Override
            public void error(String desc) {
                out.add("ERR " + desc);
            }
        };
        byte[] b = input.getBytes(StandardCharsets.UTF_8);
        if (byteAtATime) {
            for (int i = 0; i < b.length; i++) {
                f.feed(b, i, 1, sink);
            }
        } else {
            f.feed(b, 0, b.length, sink);
        }
        return out;
    }

    private static void both(String input, int max, String... expected) {
        assertThat(frame(input, max, false)).containsExactly(expected);
        assertThat(frame(input, max, true)).containsExactly(expected);
    }

    @Test
    void twoObjectsOnOneLineAndWhitespaceBetween() {
        both("{\"a\":1}{\"b\":[2]}\r\n \t{\"c\":{}}", 100, "{\"a\":1}", "{\"b\":[2]}", "{\"c\":{}}");
    }

    @Test
    void objectSplitOverLinesIsOneText() {
        both("{\"execute\":\n\"x\"\n}", 100, "{\"execute\":\n\"x\"\n}");
    }

    @Test
    void bracesAndQuotesInsideStringsDoNotCount() {
        both("{\"a\":\"}{\\\"]\"}{'b':'it\\'s }'}", 100, "{\"a\":\"}{\\\"]\"}", "{'b':'it\\'s }'}");
    }

    /** Like QEMU's lexer, a bare word (number, keyword) ends only at a delimiter. */
    @Test
    void topLevelScalarsAreTexts() {
        both("42 garbage\"s\"[1] } true\n", 100, "42", "garbage", "\"s\"", "[1]", "}", "true");
    }

    @Test
    void overLongTextGivesOneErrorThenResyncs() {
        both("{\"a\":\"" + "x".repeat(50) + "\"}{\"b\":1}", 20, "ERR JSON token size limit exceeded", "{\"b\":1}");
        both("x".repeat(30) + " 1\n", 20, "ERR JSON token size limit exceeded", "1");
    }

    @Test
    void tooDeepNestingGivesOneErrorThenResyncs() {
        both("[[[[[[[[[[]]]]]]]]]] [[1]]", 100, "ERR JSON nesting depth limit exceeded", "[[1]]");
    }

    @Test
    void partialInputWaitsForTheRest() {
        List<String> out = new ArrayList<>();
        QmpFramer f = new QmpFramer(100, 8);
        QmpFramer.Sink sink = new QmpFramer.Sink() {
            @Override
            public void text(byte[] json) {
                out.add(new String(json, StandardCharsets.UTF_8));
            }

            @Override
            public void error(String desc) {
                out.add("ERR " + desc);
            }
        };
        byte[] first = "{\"a\":".getBytes(StandardCharsets.UTF_8);
        f.feed(first, 0, first.length, sink);
        assertThat(out).isEmpty();
        assertThat(f.inValue()).isTrue();
        byte[] rest = "1}".getBytes(StandardCharsets.UTF_8);
        f.feed(rest, 0, rest.length, sink);
        assertThat(out).containsExactly("{\"a\":1}");
        assertThat(f.inValue()).isFalse();
    }
}
