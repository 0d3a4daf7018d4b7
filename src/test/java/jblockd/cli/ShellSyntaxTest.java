package jblockd.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.fasterxml.jackson.databind.node.ObjectNode;
import org.junit.jupiter.api.Test;

class ShellSyntaxTest {

    @Test
    void keyValueArgumentsTakeJsonScalarsAndPlainStrings() {
        ObjectNode r = ShellSyntax.parse("drive-backup device=drive0 target=/tmp/b.img speed=1048576 compress=false");
        assertThat(r.toString()).isEqualTo("{\"execute\":\"drive-backup\",\"arguments\":{\"device\":\"drive0\","
                + "\"target\":\"/tmp/b.img\",\"speed\":1048576,\"compress\":false}}");
    }

    @Test
    void dottedKeysBuildNestedObjects() {
        ObjectNode r = ShellSyntax.parse("nbd-server-start addr.type=unix addr.data.path=/tmp/nbd.sock");
        assertThat(r.path("arguments").toString())
                .isEqualTo("{\"addr\":{\"type\":\"unix\",\"data\":{\"path\":\"/tmp/nbd.sock\"}}}");
    }

    @Test
    void jsonValuesMayContainBlanks() {
        ObjectNode r = ShellSyntax.parse("blockdev-add driver=raw node-name=n0 file={\"driver\": \"file\", \"filename\": \"/a b\"}");
        assertThat(r.path("arguments").path("file").path("filename").asText()).isEqualTo("/a b");
        assertThat(ShellSyntax.parse("x name=\"a b\"").path("arguments").path("name").asText()).isEqualTo("a b");
    }

    @Test
    void aWholeJsonRequestPassesThrough() {
        ObjectNode r = ShellSyntax.parse("{'execute': 'query-status', 'id': 7}");
        assertThat(r.path("id").asInt()).isEqualTo(7);
        assertThat(r.has("arguments")).isFalse();
    }

    @Test
    void strangeLinesAreRefusedWithAReason() {
        assertThatThrownBy(() -> ShellSyntax.parse("stop now")).hasMessageContaining("expected key=value");
        assertThatThrownBy(() -> ShellSyntax.parse("x a={")).hasMessageContaining("unterminated");
        assertThatThrownBy(() -> ShellSyntax.parse("x a=1 a=2")).hasMessageContaining("given twice");
        assertThatThrownBy(() -> ShellSyntax.parse("{\"arguments\": {}}")).hasMessageContaining("execute");
        assertThatThrownBy(() -> ShellSyntax.parse("{\"execute\": ")).hasMessageContaining("invalid JSON");
    }
}
