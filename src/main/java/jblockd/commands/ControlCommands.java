package jblockd.commands;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;

import jblockd.qapi.ErrorClass;
import jblockd.qapi.QapiEvents;
import jblockd.qapi.QmpError;
import jblockd.qmp.CommandContext;
import jblockd.qmp.CommandGroup;
import jblockd.qmp.CommandRegistry;
import jblockd.qmp.QapiSchema;

/**
 * control.json: qmp_capabilities, query-version, query-commands, query-qmp-schema, quit
 * (qemu/qemu monitor/qmp-cmds-control.c, qapi/control.json, qapi/introspect.json).
 */
public final class ControlCommands implements CommandGroup {

    /** qmp_capabilities arguments. */
    public record Capabilities(List<String> enable) {
    }

    public record CommandInfo(String name) {
    }

    private static final JsonNodeFactory NF = JsonNodeFactory.instance;

    private final QapiSchema schema;
    private final CommandRegistry registry;
    private final QapiEvents events;
    private final Runnable onQuit;
    private final int major;
    private final int minor;
    private final int micro;
    private final String pkg;

    /**
     * @param onQuit runs after quit's reply is queued: shuts the daemon down (must not block
     *               the calling session thread for long; the daemon starts its own thread)
     */
    public ControlCommands(QapiSchema schema, CommandRegistry registry, QapiEvents events, Runnable onQuit,
                           int major, int minor, int micro, String pkg) {
        this.schema = schema;
        this.registry = registry;
        this.events = events;
        this.onQuit = onQuit;
        this.major = major;
        this.minor = minor;
        this.micro = micro;
        this.pkg = pkg;
    }

    @Override
    public void register(CommandRegistry r) {
        r.register("qmp_capabilities", Capabilities.class, this::qmpCapabilities);
        r.register("query-version", Void.class, a -> queryVersion());
        r.register("query-commands", Void.class, a -> queryCommands());
        r.register("query-qmp-schema", Void.class, a -> queryQmpSchema());
        r.register("quit", Void.class, a -> quit());
    }

    private Object qmpCapabilities(Capabilities caps) throws QmpError {
        CommandContext ctx = CommandContext.current();
        if (ctx.negotiation().negotiated()) {
            throw new QmpError(ErrorClass.COMMAND_NOT_FOUND,
                    "Capabilities negotiation is already complete, command ignored");
        }
        if (caps != null && caps.enable() != null && !caps.enable().isEmpty()) {
            // monitor/qmp-cmds-control.c qmp_caps_accept(): we offer no capability (no oob)
            throw QmpError.generic("Capability '" + caps.enable().getFirst() + "' not available");
        }
        ctx.afterReply(ctx.negotiation()::complete);
        return null;
    }

    private JsonNode queryVersion() {
        ObjectNode r = NF.objectNode();
        ObjectNode q = r.putObject("qemu");
        q.put("micro", micro);
        q.put("minor", minor);
        q.put("major", major);
        r.put("package", pkg);
        return r;
    }

    /** Every command that is both declared and registered, in schema order. */
    private List<CommandInfo> queryCommands() {
        List<CommandInfo> list = new ArrayList<>();
        for (String name : schema.commands().keySet()) {
            if (registry.get(name) != null) {
                list.add(new CommandInfo(name));
            }
        }
        return list;
    }

    private Object quit() {
        events.shutdown(false, "host-qmp-quit");
        CommandContext.current().afterReply(onQuit);
        return null;
    }

    /**
     * SchemaInfo entries (qapi/introspect.json) with real type names: QEMU masks names with
     * numbers, which clients must not rely on anyway. Commands without arguments or result use
     * the empty object type {@code q_empty}.
     */
    private ArrayNode queryQmpSchema() {
        ArrayNode out = NF.arrayNode();
        List<String> arrays = new ArrayList<>();
        for (QapiSchema.Command c : schema.commands().values()) {
            if (registry.get(c.name()) == null) {
                continue;
            }
            ObjectNode e = out.addObject();
            e.put("name", c.name());
            e.put("meta-type", "command");
            e.put("arg-type", c.argType() == null ? "q_empty" : c.argType());
            e.put("ret-type", c.returns() == null ? "q_empty" : c.returns());
            noteArray(c.returns(), arrays);
        }
        for (QapiSchema.Event ev : schema.events().values()) {
            ObjectNode e = out.addObject();
            e.put("name", ev.name());
            e.put("meta-type", "event");
            e.put("arg-type", ev.dataType() == null ? "q_empty" : ev.dataType());
        }
        ObjectNode empty = out.addObject();
        empty.put("name", "q_empty");
        empty.put("meta-type", "object");
        empty.putArray("members");
        for (Map.Entry<String, QapiSchema.Type> t : schema.types().entrySet()) {
            ObjectNode e = out.addObject();
            e.put("name", t.getKey());
            switch (t.getValue()) {
                case QapiSchema.Builtin b -> {
                    e.put("meta-type", "builtin");
                    e.put("json-type", b.jsonType());
                }
                case QapiSchema.EnumType en -> {
                    e.put("meta-type", "enum");
                    ArrayNode values = e.putArray("values");
                    ArrayNode members = e.putArray("members");
                    en.values().forEach(v -> {
                        values.add(v);
                        members.addObject().put("name", v);
                    });
                }
                case QapiSchema.StructType s -> {
                    e.put("meta-type", "object");
                    members(e.putArray("members"), s.members(), arrays);
                }
                case QapiSchema.UnionType u -> {
                    e.put("meta-type", "object");
                    members(e.putArray("members"), u.baseMembers(), arrays);
                    e.put("tag", u.discriminator());
                    ArrayNode variants = e.putArray("variants");
                    u.branches().forEach((k, v) -> variants.addObject().put("case", k).put("type", v));
                }
                case QapiSchema.AlternateType a -> {
                    e.put("meta-type", "alternate");
                    ArrayNode members = e.putArray("members");
                    a.branches().values().forEach(v -> {
                        members.addObject().put("type", v);
                        noteArray(v, arrays);
                    });
                }
            }
        }
        for (String a : arrays) {
            ObjectNode e = out.addObject();
            e.put("name", a);
            e.put("meta-type", "array");
            e.put("element-type", QapiSchema.elementType(a));
        }
        return out;
    }

    private static void members(ArrayNode out, List<QapiSchema.Member> members, List<String> arrays) {
        for (QapiSchema.Member m : members) {
            ObjectNode o = out.addObject();
            o.put("name", m.name());
            o.put("type", m.type());
            if (m.optional()) {
                o.putNull("default");
            }
            noteArray(m.type(), arrays);
        }
    }

    private static void noteArray(String ref, List<String> arrays) {
        if (ref != null && QapiSchema.isArray(ref) && !arrays.contains(ref)) {
            arrays.add(ref);
        }
    }
}
