package jblockd.qmp;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;

import org.junit.jupiter.api.Test;

import com.fasterxml.jackson.databind.BeanDescription;
import com.fasterxml.jackson.databind.JavaType;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.introspect.BeanPropertyDefinition;

import jblockd.daemon.Daemon;

/**
 * Every QMP command's declared arguments against the record its handler receives: a member the
 * schema declares but the record has no component for would pass validation and be dropped by
 * Jackson (unknown properties are ignored), i.e. accepted and silently ignored; a component the
 * schema does not declare can never be set (the validator refuses it first). Nested structs are
 * walked where the record declares a record for them.
 */
class SchemaRecordTest {
    /**
     * Handlers that take the raw arguments instead of a record: blockdev-add and blockdev-reopen
     * (a list of the same options), which BlockdevOptionsCodec decodes member by member, and
     * object-add (a flat union by qom-type, read by ObjectCommands per type). This test cannot see what such a handler
     * drops, so the list is kept short and explicit.
     */
    private static final Set<String> RAW_ARGUMENTS = Set.of("blockdev-add", "blockdev-reopen", "object-add");

    @Test
    void everyDeclaredArgumentHasARecordComponentAndViceVersa() {
        try (Daemon d = Daemon.builder().build()) {
            ObjectMapper mapper = new QmpJson().mapper();
            List<String> mismatches = new ArrayList<>();
            Set<String> raw = new TreeSet<>();
            for (CommandRegistry.Entry<?> e : d.registry().all().values()) {
                QapiSchema.Command cmd = d.schema().command(e.name());
                Class<?> type = e.argsType();
                if (type == Void.class) {
                    assertThat(cmd.argType()).as(e.name() + " takes no arguments in Java").isNull();
                    continue;
                }
                if (JsonNode.class.isAssignableFrom(type)) {
                    raw.add(e.name());
                    continue;
                }
                assertThat(cmd.argType()).as(e.name() + " takes a record but declares no arguments").isNotNull();
                compare(e.name(), d.schema(), cmd.argType(), mapper.constructType(type), mapper, mismatches);
            }
            assertThat(raw).as("handlers taking raw JSON").isEqualTo(RAW_ARGUMENTS);
            assertThat(mismatches).as("schema members vs record components").isEmpty();
        }
    }

    private static void compare(String where, QapiSchema schema, String schemaType, JavaType javaType,
                                ObjectMapper mapper, List<String> out) {
        if (!(schema.type(schemaType) instanceof QapiSchema.StructType struct) || !javaType.isRecordType()) {
            return; // enums, alternates, JsonNode members: decoded by their own code
        }
        BeanDescription bean = mapper.getDeserializationConfig().introspect(javaType);
        Set<String> declared = new TreeSet<>();
        struct.members().forEach(m -> declared.add(m.name()));
        Set<String> components = new TreeSet<>();
        for (BeanPropertyDefinition p : bean.findProperties()) {
            if (p.hasConstructorParameter()) {
                components.add(p.getName());
            }
        }
        for (String m : declared) {
            if (!components.contains(m)) {
                out.add(where + ": member '" + m + "' declared in " + schemaType + " has no component in "
                        + javaType.getRawClass().getSimpleName() + " (accepted and dropped)");
            }
        }
        for (String c : components) {
            if (!declared.contains(c)) {
                out.add(where + ": component '" + c + "' of " + javaType.getRawClass().getSimpleName()
                        + " is not declared in " + schemaType);
            }
        }
        for (BeanPropertyDefinition p : bean.findProperties()) {
            QapiSchema.Member m = struct.members().stream().filter(x -> x.name().equals(p.getName()))
                    .findFirst().orElse(null);
            if (m == null || !p.hasConstructorParameter()) {
                continue;
            }
            JavaType pt = p.getConstructorParameter().getType();
            String mt = m.type();
            if (QapiSchema.isArray(mt) && pt.isCollectionLikeType()) {
                compare(where + "." + m.name() + "[]", schema, QapiSchema.elementType(mt), pt.getContentType(),
                        mapper, out);
            } else if (!QapiSchema.isArray(mt)) {
                compare(where + "." + m.name(), schema, mt, pt, mapper, out);
            }
        }
    }
}
