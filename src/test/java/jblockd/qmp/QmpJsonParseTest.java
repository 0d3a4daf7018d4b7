package jblockd.qmp;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.util.HexFormat;

import org.junit.jupiter.api.Test;

import com.fasterxml.jackson.core.JsonProcessingException;

/** QMP texts are UTF-8 whatever their bytes look like (QmpFuzzTest found the byte sniffing). */
class QmpJsonParseTest {
    private final QmpJson json = new QmpJson();

    private static byte[] hex(String h) {
        return HexFormat.of().parseHex(h);
    }

    @Test
    void nulBytesAreNotReadAsUtf32OrUtf16() {
        // 00 00 00 31 was the number 1 (UTF-32BE), 00 31 00 32 the number 12 (UTF-16BE)
        assertThatThrownBy(() -> json.parse(hex("00000031"))).isInstanceOf(JsonProcessingException.class);
        assertThatThrownBy(() -> json.parse(hex("00310032"))).isInstanceOf(JsonProcessingException.class);
        // a UTF-16LE command was executed
        byte[] utf16 = "{\"execute\":\"stop\"}".getBytes(java.nio.charset.StandardCharsets.UTF_16LE);
        assertThatThrownBy(() -> json.parse(utf16)).isInstanceOf(JsonProcessingException.class);
    }

    @Test
    void aTextWithoutValueIsAnErrorNotNull() {
        // 00 00 fe ff: a UTF-32BE byte order mark and nothing else parsed to null
        assertThatThrownBy(() -> json.parse(hex("0000feff"))).isInstanceOf(IOException.class);
    }

    @Test
    void utf8StillParses() throws IOException {
        assertThat(json.parse("{\"execute\":\"query-status\",\"id\":\"\u00e9\"}".getBytes(
                java.nio.charset.StandardCharsets.UTF_8)).path("id").asText()).isEqualTo("\u00e9");
    }

    @Test
    void controlCharacterIsAStrayAsInQemu() {
        // qemu-storage-daemon 7.2 answers a NUL byte with "JSON parse error, stray '\0'"
        IOException e = org.junit.jupiter.api.Assertions.assertThrows(IOException.class, () -> json.parse(hex("00")));
        assertThat(QmpSession.parseErrorDesc(e)).isEqualTo("JSON parse error, stray '\u0000'");
    }

    @Test
    void nonAsciiOutsideAStringIsAStrayReplacementCharacterAsInQemu() {
        for (String h : new String[] {"efbbbf", "c3a9"}) { // a UTF-8 BOM, an e acute
            IOException e = org.junit.jupiter.api.Assertions.assertThrows(IOException.class, () -> json.parse(hex(h)));
            assertThat(QmpSession.parseErrorDesc(e)).isEqualTo("JSON parse error, stray '\uFFFD'");
        }
    }
}
