package jblockd.qmp;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.List;
import java.util.Set;
import java.util.TreeSet;

import org.junit.jupiter.api.Test;

import jblockd.daemon.Daemon;

/** Every registered command is declared in the schema and every declared command is registered. */
class SchemaRegistryTest {
    /** Declared commands whose implementation another branch has not landed yet (keep empty). */
    private static final Set<String> NOT_YET_REGISTERED = Set.of();

    @Test
    void registeredAndDeclaredCommandsAreTheSame() {
        try (Daemon d = Daemon.builder().build()) {
            Set<String> registered = new TreeSet<>(d.registry().all().keySet());
            Set<String> declared = new TreeSet<>(d.schema().commands().keySet());
            Set<String> undeclared = new TreeSet<>(registered);
            undeclared.removeAll(declared);
            Set<String> unregistered = new TreeSet<>(declared);
            unregistered.removeAll(registered);
            unregistered.removeAll(NOT_YET_REGISTERED);
            assertThat(undeclared).as("registered but not declared in the schema").isEmpty();
            assertThat(unregistered).as("declared in the schema but not registered").isEmpty();
        }
    }

    @Test
    void schemaLoadsWithAllReferencesResolved() {
        QapiSchema s = QapiSchema.load(new QmpJson());
        assertThat(s.commands()).containsKeys("qmp_capabilities", "query-version", "blockdev-add", "quit");
        assertThat(s.type("BlockdevOptions")).isInstanceOf(QapiSchema.UnionType.class);
        assertThat(s.events()).containsKey("SHUTDOWN");
        assertThat(List.copyOf(((QapiSchema.EnumType) s.type("BlockdevDriver")).values()))
                .contains("file", "raw", "qcow2", "blkdebug", "null-co");
    }
}
