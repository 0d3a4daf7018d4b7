package jblockd.fuzz;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.charset.StandardCharsets;
import java.util.Map;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;

import com.code_intelligence.jazzer.junit.FuzzTest;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import jblockd.daemon.Daemon;
import jblockd.daemon.KeyvalParser;
import jblockd.qapi.QmpError;
import jblockd.qmp.CommandRegistry;
import jblockd.qmp.QmpDispatcher;

/**
 * The command-line option parser: {@link KeyvalParser} and then, as the daemon does for
 * {@code --blockdev}, {@code --nbd-server}, {@code --export} and {@code --object}, schema
 * validation in keyval mode and binding to the command's typed arguments (never run: an
 * option may name any file). Input: {@code OPTION VALUE}, OPTION one of those four names
 * (anything else: blockdev). Invariants: a result or a KeyvalException/QmpError with a text;
 * a parsed tree holds only strings, objects and arrays and prints back to keyval text that
 * parses to the same tree; bounded time and allocation. Seeds: qemu-storage-daemon command
 * lines from the docs and tests (KeyvalFuzzTestInputs).
 */
class KeyvalFuzzTest {
    private static final Map<String, String[]> OPTIONS = Map.of(
            "blockdev", new String[] {"blockdev-add", null},
            "nbd-server", new String[] {"nbd-server-start", null},
            "export", new String[] {"block-export-add", "type"},
            "object", new String[] {"object-add", "qom-type"});

    private static Daemon daemon;

    @BeforeAll
    static void build() {
        daemon = Daemon.builder().build();
    }

    @AfterAll
    static void close() {
        daemon.close();
    }

    @FuzzTest
    void option(byte[] input) throws Exception {
        String text = new String(input, StandardCharsets.UTF_8);
        int space = text.indexOf(' ');
        String[] option = space < 0 ? null : OPTIONS.get(text.substring(0, space));
        String value = option == null ? text : text.substring(space + 1);
        String[] command = option == null ? OPTIONS.get("blockdev") : option;
        FuzzChecks.bounded(input.length, () -> parseAndValidate(value, command[0], command[1]));
    }

    private static void parseAndValidate(String value, String command, String impliedKey) throws Exception {
        ObjectNode tree;
        try {
            tree = KeyvalParser.parse(value, impliedKey);
        } catch (KeyvalParser.KeyvalException e) {
            assertThat(e.getMessage()).isNotBlank();
            return;
        }
        assertOnlyStrings(tree);
        assertThat(KeyvalParser.parse(print(tree, ""), null)).as("reparsed %s", value).isEqualTo(tree);
        QmpDispatcher d = daemon.dispatcher();
        CommandRegistry.Entry<?> entry = d.registry().get(command);
        try {
            d.json().bind(d.validator().validateArguments(d.schema().command(command), tree, true), entry.argsType());
        } catch (QmpError e) {
            assertThat(e.desc()).isNotBlank();
        }
    }

    private static void assertOnlyStrings(JsonNode n) {
        if (n.isObject() || n.isArray()) {
            n.forEach(KeyvalFuzzTest::assertOnlyStrings);
        } else {
            assertThat(n.isTextual()).as("leaf %s", n).isTrue();
        }
    }

    /** The keyval text of a parsed tree: dotted keys, array indexes, commas doubled. */
    private static String print(JsonNode n, String prefix) {
        StringBuilder sb = new StringBuilder();
        if (n.isObject()) {
            n.properties().forEach(e -> append(sb, print(e.getValue(), join(prefix, e.getKey()))));
        } else if (n.isArray()) {
            for (int i = 0; i < n.size(); i++) {
                append(sb, print(n.get(i), join(prefix, Integer.toString(i))));
            }
        } else {
            sb.append(prefix).append('=').append(n.asText().replace(",", ",,"));
        }
        return sb.toString();
    }

    private static String join(String prefix, String key) {
        return prefix.isEmpty() ? key : prefix + "." + key;
    }

    private static void append(StringBuilder sb, String item) {
        if (!item.isEmpty()) {
            if (!sb.isEmpty()) {
                sb.append(',');
            }
            sb.append(item);
        }
    }
}
