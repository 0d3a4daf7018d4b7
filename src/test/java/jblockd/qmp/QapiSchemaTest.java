package jblockd.qmp;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.charset.StandardCharsets;
import java.util.List;

import com.fasterxml.jackson.databind.JsonNode;

import org.junit.jupiter.api.Test;

import jblockd.qapi.QmpError;

/** Schema file formats and the validator's QEMU texts, without sockets. */
class QapiSchemaTest {
    private static JsonNode file(String text) throws Exception {
        return QapiSchema.readSchemaFile(text.getBytes(StandardCharsets.UTF_8));
    }

    private static JsonNode json(String text) throws Exception {
        return new QmpJson().mapper().readTree(text);
    }

    @Test
    void readsQemuStyleFilesWithCommentsAndSingleQuotes() throws Exception {
        QapiSchema s = QapiSchema.fromDocuments(List.of(file("""
                # a comment
                { 'enum': 'Mode', 'data': [ 'a', 'b' ] }
                { "command": "x", "data": { "m": "Mode", "*n": ["int"] }, "returns": [ "Undeclared" ] }
                """), file("[{\"enum\": \"Mode\", \"data\": [\"a\", \"b\"]}]")));
        assertThat(s.command("x").argType()).isEqualTo("q_obj_x-arg");
        QapiValidator v = new QapiValidator(s);
        assertThat(v.validateArguments(s.command("x"), json("{\"m\":\"a\",\"n\":[1,2]}"), false).get("n").size())
                .isEqualTo(2);
        assertThatThrownBy(() -> v.validateArguments(s.command("x"), json("{\"m\":\"a\",\"n\":[1,\"x\"]}"), false))
                .isInstanceOf(QmpError.class).hasMessage("Invalid parameter type for 'n[1]', expected: integer");
    }

    @Test
    void conflictingDuplicateDefinitionsAreRefused() {
        assertThatThrownBy(() -> QapiSchema.fromDocuments(List.of(
                file("[{\"enum\": \"Mode\", \"data\": [\"a\"]}]"), file("[{\"enum\": \"Mode\", \"data\": [\"b\"]}]"))))
                .hasMessageContaining("Mode");
    }

    @Test
    void keyvalModeConvertsStringsByType() throws Exception {
        QapiSchema s = QapiSchema.load(new QmpJson());
        QapiValidator v = new QapiValidator(s);
        JsonNode r = v.validateArguments(s.command("blockdev-add"), json(
                "{\"driver\":\"null-co\",\"node-name\":\"n\",\"size\":\"0x100000\",\"read-zeroes\":\"on\"}"), true);
        assertThat(r.get("size").asLong()).isEqualTo(1 << 20);
        assertThat(r.get("read-zeroes").asBoolean()).isTrue();
        assertThatThrownBy(() -> v.validateArguments(s.command("blockdev-add"), json(
                "{\"driver\":\"null-co\",\"node-name\":\"n\",\"size\":\"1M\"}"), true))
                .hasMessage("Parameter 'size' expects integer");
        assertThatThrownBy(() -> v.validateArguments(s.command("blockdev-add"), json(
                "{\"driver\":\"null-co\",\"node-name\":\"n\",\"read-zeroes\":\"maybe\"}"), true))
                .hasMessage("Parameter 'read-zeroes' expects 'on' or 'off'");
        assertThatThrownBy(() -> v.validateArguments(s.command("blockdev-add"), json(
                "{\"driver\":\"blkdebug\",\"node-name\":\"n\",\"image\":\"x\",\"inject-error\":[{\"errno\":\"5\"}]}"), true))
                .hasMessage("Parameter 'inject-error.0.event' is missing");
    }
}
