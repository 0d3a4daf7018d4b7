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
        assertThatThrownBy(() -> KeyvalParser.parse("l.0=a,l.2=b", null)).hasMessage("Parameter 'l.1' is missing");
    }
}
