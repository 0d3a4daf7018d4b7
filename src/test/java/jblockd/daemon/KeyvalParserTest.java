package jblockd.daemon;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.junit.jupiter.api.Test;

class KeyvalParserTest {
    @Test
    void nestedKeysEscapedCommasAndLists() throws Exception {
        var n = KeyvalParser.parse("driver=qcow2,file.driver=file,file.filename=/a,,b,"
                + "inject-error.0.event=read_aio,inject-error.1.event=write_aio", null);
        assertThat(n.get("driver").asText()).isEqualTo("qcow2");
        assertThat(n.at("/file/filename").asText()).isEqualTo("/a,b");
        assertThat(n.get("inject-error").isArray()).isTrue();
        assertThat(n.at("/inject-error/1/event").asText()).isEqualTo("write_aio");
    }

    @Test
    void impliedKeyAndErrors() throws Exception {
        assertThat(KeyvalParser.parse("nbd,id=e", "type").get("type").asText()).isEqualTo("nbd");
        assertThatThrownBy(() -> KeyvalParser.parse("nbd,id=e", null))
                .hasMessage("Expected '=' after parameter 'nbd'");
        assertThatThrownBy(() -> KeyvalParser.parse("a=1,a=2", null)).hasMessageContaining("'a'");
        assertThatThrownBy(() -> KeyvalParser.parse("a=1,a.b=2", null)).hasMessageContaining("a");
        assertThatThrownBy(() -> KeyvalParser.parse("l.0=a,l.2=b", null)).hasMessage("Parameter 'l.1' missing");
    }

    /** QEMU 7.2's texts (qemu-storage-daemon --blockdev KEYVAL) for keys keyval.c refuses. */
    @Test
    void keyFragmentsFollowQemu() {
        // a root key that is a list index made the root an array (found by KeyvalFuzzTest)
        assertThatThrownBy(() -> KeyvalParser.parse("0=j", null)).hasMessage("Invalid parameter '0'");
        assertThatThrownBy(() -> KeyvalParser.parse("0a=1", null)).hasMessage("Invalid parameter '0a'");
        assertThatThrownBy(() -> KeyvalParser.parse("a.0b=x", null)).hasMessage("Invalid parameter 'a.0b'");
        assertThatThrownBy(() -> KeyvalParser.parse("_a=1", null)).hasMessage("Invalid parameter '_a'");
        assertThatThrownBy(() -> KeyvalParser.parse("\u00e9=1", null)).hasMessage("Invalid parameter '\u00e9'");
        assertThatThrownBy(() -> KeyvalParser.parse("a.0=x,a.x=1", null))
                .hasMessage("Parameters 'a.*' used inconsistently");
        String longKey = "a".repeat(128);
        assertThatThrownBy(() -> KeyvalParser.parse(longKey + "=1", null))
                .hasMessage("Parameter '" + longKey + "' is too long");
    }
}
